"""The stages of `certify run` in order, their cache keys, and resume. Only this module knows the order.

Each stage is a function that takes what it needs and returns a value; artifacts (released data,
weights, surrogates, draws) come from the content-addressed cache when an earlier run made them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from attacks.base import POISONS, CraftContext, check_budget
from certify import bounds, device as devices, execution
from certify.cache import Cache, atomic_write, key_of, tensor_digest
from certify.config import SIGMA_GRID, RunConfig, to_dict
from certify.data import Dataset, load_dataset
from certify.errors import UserError
from certify.models import build_model, count_parameters
from certify.progress import say
from certify.seeding import derive
from certify.smoothing import draw_accuracies, trainable
from certify.surrogate import recipe, train_surrogate
from certify.training import evaluate, train

SCHEMA = "ue-certify/report/v1"


@dataclass
class Run:
    """What every stage of one run shares."""
    cfg: RunConfig
    data: Dataset
    cache: Cache
    device: torch.device
    arch: str
    timings: dict[str, float] = field(default_factory=dict)
    test_digest: str = ""
    clean_key: str = ""  # cache key of the clean model (the sigma rule is keyed by it)
    independent_distance: float | None = None

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def model(self, seed: int) -> torch.nn.Module:
        return build_model(self.arch, self.data.shape, self.data.num_classes, seed).to(self.device)

    def model_spec(self) -> dict:
        return {"arch": self.arch, "shape": list(self.data.shape), "classes": self.data.num_classes,
                "device": self.device.type}


# --- output directory and resume --------------------------------------------------------------
def prepare_out(cfg: RunConfig, command: str) -> Path:
    """Create/check --out before any long work; with --resume, the stored configuration must match."""
    out = Path(cfg.out) if cfg.out else Path("reports/runs") / (
        datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + "-".join(cfg.poisons)[:60])
    stored = out / "run.json"
    resolved = _comparable(cfg)
    if cfg.resume:
        if not stored.is_file():
            raise UserError(f"--resume: {out} holds no interrupted run (no run.json)")
        try:
            previous = json.loads(stored.read_text())["config"]
        except (ValueError, KeyError, OSError):
            raise UserError(f"--resume: {stored} is not a run checkpoint of this tool") from None
        if previous != resolved:
            changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
            raise UserError(f"--resume: {out} was started with another configuration "
                            f"(differs in: {', '.join(changed)})")
    elif stored.exists() or (out / "report.json").exists():
        raise UserError(f"output directory {out} already holds a run; use --resume or another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(stored, lambda tmp: Path(tmp).write_text(json.dumps({"config": resolved, "command": command}, indent=1)))
    except OSError as e:
        raise UserError(f"output directory {out} is not writable: {e.strerror}") from None
    return out


def _comparable(cfg: RunConfig) -> dict:
    """The configuration that determines the results (not where they go or how they are resumed)."""
    d = to_dict(cfg)
    for k in ("out", "resume", "cache_dir", "executor", "workers", "address"):
        d.pop(k)
    return json.loads(json.dumps(d))


# --- stages -----------------------------------------------------------------------------------
def train_model(run: Run, x: torch.Tensor, y: torch.Tensor, seed_name: str, desc: str):
    """A model trained normally on (x, y) with the run's recipe: (model, history), cached."""
    seed = derive(run.cfg.seed, seed_name)
    key = key_of("model", {"model": run.model_spec(), "train": dataclasses.asdict(run.cfg.train),
                           "seed": seed, "data": tensor_digest(x, y), "test": run.test_digest})

    def make():
        model = run.model(seed)
        hist = train(model, x, y, run.cfg.train, seed, x_test=run.data.x_test, y_test=run.data.y_test, desc=desc)
        return {"state": model.state_dict(), "history": hist}

    art = run.cache.tensors(key, make)
    model = run.model(seed)
    model.load_state_dict(art["state"])
    return model.eval(), art["history"], key


def craft(run: Run, name: str) -> tuple[torch.Tensor, dict]:
    """The released (protected) training images of poison `name` and its budget section, cached."""
    entry = POISONS.get(name)
    overrides = run.cfg.poison_params.get(name, {})
    params = POISONS.params(name, overrides)
    seed = derive(run.cfg.seed, "poison", name)
    spec = {"poison": name, "params": dataclasses.asdict(params) if params else None, "seed": seed,
            "model": run.model_spec(), "train": dataclasses.asdict(run.cfg.train),
            "data": tensor_digest(run.data.x_train, run.data.y_train)}
    key = key_of("released", spec)

    def make():
        ctx = CraftContext(run.data.x_train, run.data.y_train, run.data.num_classes, run.model,
                           run.cfg.train, seed, run.device)
        released = entry.factory(ctx, params)
        return {"released": torch.round(released * 255).to(torch.uint8)}

    released = run.cache.tensors(key, make)["released"].to(torch.float32) / 255.0
    norm = type(params).norm
    epsilon = float(params.epsilon_for(run.data.shape))
    measured = check_budget(name, run.data.x_train, released, norm, epsilon)
    budget = {"norm": norm, "epsilon": epsilon, "measured": measured}
    return released, {"budget": budget, "params": dataclasses.asdict(params) if params else {}}


def choose_sigma(run: Run, clean_model: torch.nn.Module) -> tuple[float, dict]:
    """--sigma auto: the largest sigma on the grid at which the clean model keeps a median accuracy
    of at least ratio x its unperturbed accuracy, from 50 draws of a seed stream of its own (never
    reused in a certificate). The grid is scanned upward and stops at the first sigma that fails,
    since accuracy falls with sigma. An explicit --sigma is used as given."""
    cfg = run.cfg
    if cfg.sigma != "auto":
        return float(cfg.sigma), {"rule": "fixed", "tried": []}
    sm = cfg.smoothing
    seed = derive(cfg.seed, "sigma-rule")
    base = evaluate(clean_model, run.data.x_test, run.data.y_test, sm.eval_batch)
    key = key_of("sigma", {"model": run.clean_key, "seed": seed, "draws": sm.sigma_draws, "ratio": sm.sigma_ratio,
                           "grid": SIGMA_GRID, "eval_batch": sm.eval_batch})

    def make():
        tried, chosen = [], None
        for sigma in SIGMA_GRID:
            acc = draw_accuracies(clean_model, sigma, seed, 0, sm.sigma_draws, run.data.x_test,
                                  run.data.y_test, sm.eval_batch)
            ratio = float(np.median(acc)) / base if base > 0 else 0.0
            tried.append({"sigma": sigma, "median_ratio": ratio, "median_accuracy": float(np.median(acc))})
            if ratio < sm.sigma_ratio:
                break
            chosen = sigma
        return {"tried": tried, "chosen": chosen}

    art = run.cache.tensors(key, make)
    rule = {"rule": "auto", "ratio": sm.sigma_ratio, "draws": sm.sigma_draws,
            "unperturbed_accuracy": base, "tried": art["tried"]}
    if art["chosen"] is None:
        rule["warning"] = (f"no sigma on the grid kept {sm.sigma_ratio} x the unperturbed accuracy; "
                           f"using the smallest, {SIGMA_GRID[0]}")
        return SIGMA_GRID[0], rule
    return float(art["chosen"]), rule


def surrogate(run: Run, x: torch.Tensor, y: torch.Tensor, sigma: float):
    """The weights to smooth: the RWP (or standard) surrogate trained on (x, y), cached."""
    cfg = run.cfg
    seed = derive(cfg.seed, "surrogate")
    rec = recipe(cfg.surrogate, sigma)
    key = key_of("surrogate", {"model": run.model_spec(), "train": dataclasses.asdict(cfg.train), "recipe": rec,
                               "seed": seed, "data": tensor_digest(x, y)})

    def make():
        model = run.model(seed)
        hist = train_surrogate(model, x, y, cfg.train, cfg.surrogate, sigma, seed)
        return {"state": model.state_dict(), "history": hist}

    art = run.cache.tensors(key, make)
    model = run.model(seed)
    model.load_state_dict(art["state"])
    return model.eval(), rec, key


def certificate(run: Run, name: str, model: torch.nn.Module, rec: dict, surrogate_key: str,
                sigma: float, rule: dict) -> dict:
    cfg = run.cfg
    sm = cfg.smoothing
    draws_per_pass = 1 if run.device.type == "cpu" else 16
    seed = derive(cfg.seed, "draws")
    key = key_of("draws", {"surrogate": surrogate_key, "sigma": sigma, "seed": seed, "test": run.test_digest,
                           "eval_batch": sm.eval_batch, "draws_per_pass": draws_per_pass, "threads": sm.threads})
    job = execution.DrawJob(run.arch, run.data.shape, run.data.num_classes,
                            {k: v.cpu() for k, v in model.state_dict().items()}, sigma, seed,
                            run.data.x_test, run.data.y_test, sm.eval_batch, draws_per_pass, sm.threads,
                            str(run.device))
    draws = execution.map_draws(job, cfg.samples, sm.chunk, executor=cfg.executor, workers=cfg.workers,
                                address=cfg.address, cache=run.cache, key=key, desc=f"certify {name}")
    stats = bounds.summarize(draws, cfg.q, cfg.alpha, sigma, cfg.eta_sigma, cfg.coverage)
    theta = torch.cat([p.flatten() for p in trainable(model).values()])
    return {"sigma": sigma, "q": cfg.q, "alpha": cfg.alpha, "samples": cfg.samples,
            "surrogate": rec["kind"], "surrogate_recipe": rec,
            "surrogate_accuracy": evaluate(model, run.data.x_test, run.data.y_test, sm.eval_batch),
            "sigma_rule": rule, **stats, "theta_norm": float(theta.norm()),
            "independent_distance": run.independent_distance, "draws": [float(a) for a in draws]}


def independent_distance(run: Run, clean_model: torch.nn.Module) -> float:
    """l2 distance between two clean models trained with the same recipe and different seeds."""
    other, _, _ = train_model(run, run.data.x_train, run.data.y_train, "victim-independent", "train clean (2nd seed)")
    a = torch.cat([p.flatten() for p in trainable(clean_model).values()])
    b = torch.cat([p.flatten() for p in trainable(other).values()])
    return float((a - b).norm())


# --- the run ----------------------------------------------------------------------------------
def poison_names(cfg: RunConfig) -> list[str]:
    names = []
    for n in cfg.poisons:
        if n == "all":
            names += [e.name for e in POISONS.entries()]
        else:
            POISONS.get(n)  # unknown names fail here, before any work
            names.append(n)
    if cfg.baseline and "none" not in names:
        names.insert(0, "none")
    if not cfg.baseline:
        names = [n for n in names if n != "none"]
    return list(dict.fromkeys(names))


def environment(cfg: RunConfig, dev: torch.device) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "device": devices.describe(dev),
            "executor": cfg.executor, "workers": cfg.workers if cfg.executor == "ray" else 1,
            "threads": cfg.smoothing.threads}


def _start(cfg: RunConfig) -> Run:
    cache = Cache(cfg.cache_dir)
    dev = devices.pick_device()
    devices.set_threads(devices.default_threads())
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.seed, cfg.test)
    run_ = Run(cfg, data, cache, dev, cfg.model or "cnn")
    run_.test_digest = tensor_digest(data.x_test, data.y_test)
    return run_


def export_poison(cfg: RunConfig, out: str, fmt: str) -> dict:
    """`certify poison`: craft one poison (cached) and write the released dataset with a manifest."""
    from certify.export import export_released

    (name,) = cfg.poisons
    run_ = _start(cfg)
    released, info = craft(run_, name)
    manifest = {"poison": name, "parameters": info["params"], "budget": info["budget"], "seed": cfg.seed,
                "dataset": run_.data.name, "model": run_.arch, "n": len(released),
                "classes": run_.data.classes}
    export_released(released, run_.data.y_train, run_.data.classes, out, fmt, manifest)
    return manifest


def run(cfg: RunConfig, command: str) -> tuple[dict, Path]:
    names = poison_names(cfg)
    for n in names:  # parameters are validated before any work
        POISONS.params(n, cfg.poison_params.get(n, {}))
    for n in cfg.poison_params:
        POISONS.get(n)
    out = prepare_out(cfg, command)
    certifying = "certify" not in cfg.skip
    if certifying and cfg.executor == "ray":
        execution.start_ray(cfg.address, cfg.workers)  # overlaps Ray's start-up with training
    run_ = _start(cfg)
    data, arch, dev = run_.data, run_.arch, run_.device
    say(f"dataset {data.name}: {len(data.x_train)} train / {len(data.x_test)} test, "
        f"{'x'.join(map(str, data.shape))}, {data.num_classes} classes; model {arch}; poisons {', '.join(names)}")

    with run_.stage("training"):
        clean_model, clean_hist, run_.clean_key = train_model(run_, data.x_train, data.y_train, "victim", "train clean")
    say(f"clean model: test accuracy {clean_hist['final_test_accuracy']:.3f}")
    sigma, rule = None, None
    if certifying:
        with run_.stage("certification"):
            sigma, rule = choose_sigma(run_, clean_model)
        say(f"sigma = {sigma} ({rule['rule']})")
        with run_.stage("training"):
            run_.independent_distance = independent_distance(run_, clean_model)

    report = {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": command, "seed": cfg.seed, "config": to_dict(cfg), "environment": environment(cfg, dev),
              "dataset": data.info(), "model": {"arch": arch, "parameters": count_parameters(clean_model)},
              "poisons": {}}
    for name in names:
        section = {}
        with run_.stage("crafting"):
            released, info = craft(run_, name)
        section["budget"] = info["budget"]
        section["parameters"] = info["params"]
        with run_.stage("training"):
            _, hist, _ = train_model(run_, released, data.y_train, "victim", f"train {name}")
        section["empirical"] = {"clean_accuracy": clean_hist["final_test_accuracy"],
                                "protected_accuracy": hist["final_test_accuracy"],
                                "peak_protected_accuracy": hist["peak_test_accuracy"],
                                "clean_history": clean_hist["test_accuracy"],
                                "protected_history": hist["test_accuracy"]}
        line = f"{name}: protected accuracy {hist['final_test_accuracy']:.3f} (clean {clean_hist['final_test_accuracy']:.3f})"
        if certifying:
            with run_.stage("surrogate"):
                sur, rec, skey = surrogate(run_, released, data.y_train, sigma)
            with run_.stage("certification"):
                section["certificate"] = certificate(run_, name, sur, rec, skey, sigma, rule)
            c = section["certificate"]
            point = next((p for p in c["curve"] if abs(p["eta_over_sigma"] - 0.1) < 1e-9), c["curve"][0])
            cl = point["learnability"]
            line += f"; certified learnability {('abstain' if cl is None else f'{cl:.3f}')} at eta/sigma={point['eta_over_sigma']}"
        say(line)
        report["poisons"][name] = section
    report["timings"] = {k: round(v, 2) for k, v in run_.timings.items()}
    from certify.report import write_report  # figures and HTML are only needed at the end

    with run_.stage("report"):
        write_report(report, out)
    return report, out
