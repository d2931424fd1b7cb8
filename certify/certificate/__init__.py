"""The certificate slice: certified (q, eta)-learnability by parametric smoothing.

Modules: `config` (the run config's certificate section), `sigma_rule` (`--sigma auto`),
`surrogate` (RWP training of the weights to smooth), `draws` (accuracies of weight-perturbed
copies), `bounds` (order-statistic bounds: numpy in, numbers out), `soundness` (the simulation
that checks the bound's failure rate), `scope` (the victims trained independently on each release
that the certified η is set against, a slice of its own).

`SLICE` is the slice (`certify.context.Slice`): its run part adds σ (the auto rule on the clean
model, or a constant) and the independent model; per poison it adds the surrogate and the chunks of
draws, and its section is the report's `certificate` (with `victims` where the scope slice trained
them). σ reaches every task that needs it as a plain number through `sigma_input` (the one place the
rule's artifact is read for it). `certify_weights` runs just the draws and bounds for given weights
(benchmarks use it), through the same tasks.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from certify.cache import tensor_digest
from certify.certificate.config import SIGMA_GRID
from certify.certificate.draws import draw_accuracies, draws_per_pass
from certify.certificate.sigma_rule import fixed, sigma_of, sigma_task
from certify.certificate.surrogate import recipe, train_surrogate
from certify.context import ModelSpec, RunContext, Slice, Viewed, images, task_device
from certify.data import Dataset
from certify.graph import run_graph
from certify.models import trainable
from certify.registry import CONTROL
from certify.seeding import derive
from certify.training import TrainConfig, evaluate
from certify.certificate.scope import add_independent, victims_field
from certify.victims import distance

__all__ = ["SLICE", "add_sigma", "sigma_input", "sigma_value", "sigma_of", "certify_weights"]


def sigma_value(art: dict) -> float:
    """The run's σ as a plain number, from the σ rule's artifact (or the constant of `--sigma F`)."""
    return sigma_of(art)[0]


def sigma_input(sigma: str) -> Viewed:
    """The σ artifact `sigma` as a task input: keyed by it, received as its value (`sigma_value`)."""
    return Viewed(sigma, sigma_value)


def add_sigma(ctx: RunContext, clean: str | None) -> str:
    """The sigma of every certificate of the run: fixed, or the auto rule on the clean model."""
    cfg = ctx.cfg
    if cfg.sigma != "auto":
        return ctx.graph.const(f"sigma-fixed-{float(cfg.sigma)!r}", fixed(cfg.sigma))
    sm = cfg.smoothing
    spec = {"seed": derive(cfg.seed, "sigma-rule"), "draws": sm.sigma_draws, "ratio": sm.sigma_ratio,
            "eval_batch": sm.eval_batch, "grid": SIGMA_GRID}
    return ctx.cached("sigma", spec, sigma_task, (ctx.data_key, clean))


def surrogate_task(data: Dataset, released: dict, sigma: float, *victim: dict, seed: int, training: TrainConfig,
                   surrogate, eval_batch: int, model: ModelSpec, device: str) -> dict:
    """The weights to smooth: trained on the release (fine-tuned from its victim by default)."""
    net = model.build(seed, task_device(device))
    if victim:
        net.load_state_dict(victim[0]["state"])
    hist = train_surrogate(net, images(released["released"]), data.y_train, training, surrogate, sigma, seed)
    net.eval()
    theta = torch.cat([p.flatten() for p in trainable(net).values()])
    return {"state": {k: v.cpu() for k, v in net.state_dict().items()}, "history": hist,
            "accuracy": evaluate(net, data.x_test, data.y_test, eval_batch),
            "theta_norm": float(theta.norm())}


def draws_task(data: Dataset, surrogate: dict, sigma: float, *, seed: int, start: int, stop: int,
               eval_batch: int, draws_per_pass: int, model: ModelSpec, device: str) -> dict:
    """Accuracies of draws start..stop-1 (a chunk: the unit that is checkpointed and spread; draw j
    depends only on (seed, j), so how draws are chunked changes no accuracy)."""
    net = model.load(surrogate["state"], task_device(device))
    acc = draw_accuracies(net, sigma, seed, start, stop, data.x_test, data.y_test, eval_batch, draws_per_pass)
    return {"accuracies": torch.from_numpy(acc)}


def _chunk_tasks(ctx: RunContext, surrogate: str, sigma: str, name: str | None) -> list[str]:
    cfg, sm = ctx.cfg, ctx.cfg.smoothing
    spec = {"seed": derive(cfg.seed, "draws"), "eval_batch": sm.eval_batch,
            "draws_per_pass": draws_per_pass(ctx.device)}
    return [ctx.cached("draws", {**spec, "start": lo, "stop": min(cfg.samples, lo + sm.chunk)}, draws_task,
                       (ctx.data_key, surrogate, sigma_input(sigma)), poison=name, threads=sm.threads, quiet=True)
            for lo in range(0, cfg.samples, sm.chunk)]


def run(ctx: RunContext, keys: dict) -> dict:
    """σ (certificates and recovery read it) and the independent clean model (the report's
    weight-space scale)."""
    skip = ctx.cfg.skip
    out = {}
    if "certify" not in skip or "recovery" not in skip:
        out["sigma"] = add_sigma(ctx, keys["clean"])
    if "certify" not in skip:
        out["independent"] = add_independent(ctx, keys["clean_release"], CONTROL, 0)
    return out


def add(ctx: RunContext, keys: dict) -> dict:
    """The surrogate of the release (where σ is planned) and, unless certificates are skipped, the
    chunks of draws certifying it: {"surrogate": key, "draws": [keys]}."""
    if "sigma" not in keys:
        return {}
    cfg, name, sigma = ctx.cfg, keys["name"], keys["sigma"]
    warm = cfg.surrogate.init == "victim"
    spec = {"seed": derive(cfg.seed, "surrogate"), "surrogate": cfg.surrogate,
            # the training settings it trains with: its own epochs, never the run's train.epochs
            "training": dataclasses.replace(cfg.train, epochs=cfg.surrogate.epochs),
            "eval_batch": cfg.smoothing.eval_batch}  # its test accuracy is evaluated in batches of it
    inputs = (ctx.data_key, keys["release"], sigma_input(sigma)) + ((keys["victim"],) if warm else ())
    sur = ctx.cached("surrogate", spec, surrogate_task, inputs, poison=name)
    return {"surrogate": sur, "draws": _chunk_tasks(ctx, sur, sigma, name) if "certify" not in cfg.skip else []}


def section(ctx: RunContext, keys: dict, values: dict) -> dict:
    """The report's `certificate` (at `ctx.cfg.alpha`: a replicate's level) where draws were made."""
    if not keys.get("draws"):
        return {}
    cfg = ctx.cfg
    sigma, rule = sigma_of(values[keys["sigma"]])
    draws = np.concatenate([values[k]["accuracies"].numpy() for k in keys["draws"]])
    sur = values[keys["surrogate"]]
    indep = distance(ctx.model, values[keys["clean"]]["state"], values[keys["independent"]]["state"])
    rec = recipe(cfg.surrogate, sigma)
    stats = _summarize(draws, cfg, sigma)
    # `samples` once, from the draws, where the section has always placed it
    cert = {"sigma": sigma, "q": cfg.q, "alpha": cfg.alpha, "samples": stats.pop("samples"), "surrogate": rec["kind"],
            "surrogate_recipe": rec, "surrogate_accuracy": sur["accuracy"], "sigma_rule": rule, **stats,
            "theta_norm": sur["theta_norm"], "independent_distance": indep, "draws": [float(a) for a in draws]}
    if keys.get("scope_victims"):  # the scope slice's (certify/certificate/scope.py)
        cert["independent_models"] = victims_field(ctx, sur, [values[k] for k in keys["scope_victims"]],
                                        stats["max_certified_eta"])
    return {"certificate": cert}


def _summarize(draws: np.ndarray, cfg, sigma: float) -> dict:
    """The bounds of the draws. `bounds` is imported here, where the driver assembles: its scipy.stats
    costs every Ray worker that imports this package for its tasks ~0.6 s and ~46 MiB, and none of
    them bounds anything."""
    from certify.certificate import bounds

    return bounds.summarize(draws, cfg.q, cfg.alpha, sigma, cfg.eta_sigma, cfg.coverage)


SLICE = Slice("certificate", add, section, run)


def certify_weights(ctx: RunContext, state: dict, sigma: float, *, cluster=None) -> tuple[np.ndarray, dict]:
    """Draws and bounds for given weights (no surrogate training): the accuracies in draw order and
    the statistics, computed by the same chunk tasks as a run (`ctx.cfg.executor`)."""
    sur = ctx.graph.const(f"weights-{tensor_digest(*state.values())}", {"state": state})
    sig = ctx.graph.const(f"sigma-fixed-{float(sigma)!r}", fixed(sigma))
    chunks = _chunk_tasks(ctx, sur, sig, None)
    out = run_graph(ctx.graph, ctx.cache, executor=ctx.cfg.executor, t0=time.time(), cluster=cluster)
    draws = np.concatenate([out.values[k]["accuracies"].numpy() for k in chunks])
    return draws, _summarize(draws, ctx.cfg, sigma)
