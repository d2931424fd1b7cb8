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
    threads: int = 1
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
        # the thread count can change float reductions, so artifacts are keyed by it
        return {"arch": self.arch, "shape": list(self.data.shape), "classes": self.data.num_classes,
                "device": self.device.type, "threads": self.threads}


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
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory {out} is not writable: {e.strerror}") from None
    return out


def mark_started(out: Path, cfg: RunConfig, command: str) -> None:
    """run.json (what --resume checks), written once the inputs loaded, so bad input locks nothing."""
    record = {"config": _comparable(cfg), "command": command}
    atomic_write(out / "run.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))


def _comparable(cfg: RunConfig) -> dict:
    """The configuration that determines the results (not where they go or how they are resumed)."""
    d = to_dict(cfg)
    for k in ("out", "resume", "cache_dir", "executor", "workers", "address"):
        d.pop(k)  # where results go and how draws are spread do not change them
    return json.loads(json.dumps(d))


# --- stages -----------------------------------------------------------------------------------
def train_model(run: Run, x: torch.Tensor, y: torch.Tensor, seed_name: str, desc: str):
    """A model trained normally on (x, y) with the run's recipe: (model, history), cached."""
    seed = derive(run.cfg.seed, seed_name)
    keep = "scores" not in run.cfg.skip  # SAL scores every epoch's weights
    key = key_of("model", {"model": run.model_spec(), "train": dataclasses.asdict(run.cfg.train),
                           "seed": seed, "data": tensor_digest(x, y), "test": run.test_digest, "checkpoints": keep})

    def make():
        model = run.model(seed)
        checkpoints = []

        def snapshot(epoch, m):
            checkpoints.append({k: v.detach().cpu().clone() for k, v in m.state_dict().items()})

        hist = train(model, x, y, run.cfg.train, seed, x_test=run.data.x_test, y_test=run.data.y_test,
                     epoch_callback=snapshot if keep else None, desc=desc)
        return {"state": model.state_dict(), "history": hist, "checkpoints": checkpoints}

    art = run.cache.tensors(key, make)
    model = run.model(seed)
    model.load_state_dict(art["state"])
    return model.eval(), art["history"], key, art["checkpoints"]


def craft(run: Run, name: str) -> tuple[torch.Tensor, dict]:
    """The released (protected) training images of poison `name` and its budget section, cached."""
    entry = POISONS.get(name)
    overrides = run.cfg.poison_params.get(name, {})
    params = POISONS.params(name, overrides, dataset=run.cfg.dataset, profile=run.cfg.profile)
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


def surrogate(run: Run, x: torch.Tensor, y: torch.Tensor, sigma: float, victim: torch.nn.Module):
    """The weights to smooth: the RWP (or standard) surrogate trained on (x, y), by default
    fine-tuned from `victim` (the model trained normally on (x, y)), cached."""
    cfg = run.cfg
    seed = derive(cfg.seed, "surrogate")
    rec = recipe(cfg.surrogate, sigma)
    warm = cfg.surrogate.init == "victim"
    # keyed by the victim's weights, not its cache key: that key also records whether per-epoch
    # checkpoints were kept, which does not change the weights a surrogate starts from
    start = tensor_digest(*victim.state_dict().values()) if warm else None
    key = key_of("surrogate", {"model": run.model_spec(), "train": dataclasses.asdict(cfg.train), "recipe": rec,
                               "seed": seed, "data": tensor_digest(x, y), "init": start})

    def make():
        model = run.model(seed)
        if warm:
            model.load_state_dict(victim.state_dict())
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


def defended(run: Run, name: str, released: torch.Tensor, defence: str) -> dict:
    """Final and peak test accuracy of a victim trained on `released` under `defence`, cached."""
    from defenses.base import DEFENSES

    cfg = run.cfg
    params = DEFENSES.params(defence, cfg.defense_params.get(defence, {}), dataset=cfg.dataset, profile=cfg.profile)
    seed = derive(cfg.seed, "victim")
    key = key_of("defended", {"model": run.model_spec(), "train": dataclasses.asdict(cfg.train), "seed": seed,
                              "defence": defence, "params": dataclasses.asdict(params) if params else None,
                              "data": tensor_digest(released, run.data.y_train), "test": run.test_digest})

    def make():
        d = DEFENSES.get(defence).factory(params)
        x, y = released, run.data.y_train
        if d.prepare is not None:
            x, y = d.prepare(x, y, derive(cfg.seed, "defence", defence))
        model = run.model(seed)
        hist = train(model, x, y, cfg.train, seed, x_test=run.data.x_test, y_test=run.data.y_test,
                     batch_transform=d.batch_transform, loss_fn=d.loss_fn, desc=f"train {name} + {defence}")
        return {"accuracy": hist["final_test_accuracy"], "peak_accuracy": hist["peak_test_accuracy"],
                "history": hist["test_accuracy"]}

    return run.cache.tensors(key, make)


def sal_scores(run: Run, model_key: str, checkpoints: list, x: torch.Tensor, y: torch.Tensor) -> list:
    """SAL (layers x scored epochs) of a trained model from its per-epoch checkpoints, cached."""
    from certify.scores.sal_ud import sal_matrix

    cfg = run.cfg
    key = key_of("sal", {"model": model_key, "sal": dataclasses.asdict(cfg.sal), "seed": cfg.seed})
    return run.cache.tensors(key, lambda: {"sal": sal_matrix(run.model(0), checkpoints, x, y, cfg.sal, cfg.seed)})["sal"]


def recovery(run: Run, sur: torch.nn.Module, surrogate_key: str, sigma: float) -> dict:
    """Each recovery attack's accuracy against eta, starting from the certified surrogate, cached."""
    from attacks.recovery import RECOVERY, RecoveryInputs, attacker_split

    cfg, data = run.cfg, run.data
    rc = cfg.recovery
    x_att, y_att = attacker_split(data.x_train, data.y_train, rc.attacker_fraction, derive(cfg.seed, "attacker-set"))
    etas = [r * sigma for r in rc.eta_sigma]
    out = {}
    for method in rc.methods:
        params = RECOVERY.params(method, cfg.recovery_params.get(method, {}), dataset=cfg.dataset,
                                 profile=cfg.profile)
        seed = derive(cfg.seed, "recovery", method)
        key = key_of("recovery", {"surrogate": surrogate_key, "method": method, "etas": etas, "seed": seed,
                                  "params": dataclasses.asdict(params), "attacker": rc.attacker_fraction,
                                  "test": run.test_digest})
        inputs = RecoveryInputs(sur, x_att, y_att, data.x_test, data.y_test, etas, seed)
        curve = run.cache.tensors(key, lambda: {"curve": RECOVERY.get(method).factory(inputs, params)})["curve"]
        out[method] = {"start": "surrogate", "bn": params.bn, "constraint": params.constraint,
                       "attacker_images": len(x_att), "params": dataclasses.asdict(params),
                       "curve": [{"eta": p["eta"], "eta_over_sigma": r, "accuracy": p["accuracy"]}
                                 for p, r in zip(curve, rc.eta_sigma)]}
    return out


def independent_distance(run: Run, clean_model: torch.nn.Module) -> float:
    """l2 distance between two clean models trained with the same recipe and different seeds."""
    other, *_ = train_model(run, run.data.x_train, run.data.y_train, "victim-independent", "train clean (2nd seed)")
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


def _start(cfg: RunConfig, data: Dataset | None = None) -> Run:
    cache = Cache(cfg.cache_dir)
    dev = devices.pick_device()
    threads = cfg.threads or devices.default_threads()
    devices.set_threads(threads)
    data = data or load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.seed, cfg.test)
    run_ = Run(cfg, data, cache, dev, cfg.model or "cnn", threads=threads)
    run_.test_digest = tensor_digest(data.x_test, data.y_test)
    return run_


def export_poison(cfg: RunConfig, out: str, fmt: str) -> dict:
    """`certify poison`: craft one poison (cached) and write the released dataset with a manifest."""
    from certify.export import export_released

    from certify.export import check_target

    (name,) = cfg.poisons
    check_target(Path(out).expanduser().resolve())  # before minutes of crafting
    run_ = _start(cfg)
    released, info = craft(run_, name)
    manifest = {"poison": name, "parameters": info["params"], "budget": info["budget"], "seed": cfg.seed,
                "dataset": run_.data.name, "model": run_.arch, "n": len(released),
                "classes": run_.data.classes}
    export_released(released, run_.data.y_train, run_.data.classes, out, fmt, manifest)
    return manifest


def evaluate_release(run_: Run, name: str, released: torch.Tensor, head: dict, ctx: dict) -> dict:
    """Every stage after crafting, for one released training set: the poison's report section,
    starting from `head` (its budget and parameters)."""
    cfg, data = run_.cfg, run_.data
    section = dict(head)
    with run_.stage("training"):
        protected_model, hist, model_key, checkpoints = train_model(run_, released, data.y_train, "victim",
                                                                    f"train {name}")
    clean_hist = ctx["clean_history"]
    section["empirical"] = {"clean_accuracy": clean_hist["final_test_accuracy"],
                            "protected_accuracy": hist["final_test_accuracy"],
                            "peak_protected_accuracy": hist["peak_test_accuracy"],
                            "clean_history": clean_hist["test_accuracy"],
                            "protected_history": hist["test_accuracy"]}
    line = f"{name}: protected accuracy {hist['final_test_accuracy']:.3f} (clean {clean_hist['final_test_accuracy']:.3f})"
    if cfg.defenses:
        with run_.stage("defences"):
            section["empirical"]["defenses"] = {
                d: {k: v for k, v in defended(run_, name, released, d).items() if k != "history"} for d in cfg.defenses}
    if "scores" not in cfg.skip:
        from certify.scores.mutual_info import mi_section
        from certify.scores.sal_ud import ud_section

        with run_.stage("scores"):
            sal = sal_scores(run_, model_key, checkpoints, released, data.y_train)
            section["sal_ud"] = ud_section(ctx["sal_clean"], sal, cfg.sal, cfg.profile)
            section["mutual_information"] = mi_section(ctx["clean_model"], protected_model, data.x_test,
                                                       data.y_test, cfg.mi, cfg.seed)
        line += f"; UD {section['sal_ud']['ud']}; MI gap {section['mutual_information']['gap']:.3f}"
    if ctx["sigma"] is not None:
        with run_.stage("surrogate"):
            sur, rec, skey = surrogate(run_, released, data.y_train, ctx["sigma"], protected_model)
        if "recovery" not in cfg.skip:
            with run_.stage("recovery"):
                section["recovery"] = recovery(run_, sur, skey, ctx["sigma"])
        if "certify" not in cfg.skip:
            with run_.stage("certification"):
                section["certificate"] = certificate(run_, name, sur, rec, skey, ctx["sigma"], ctx["sigma_rule"])
            c = section["certificate"]
            point = next((p for p in c["curve"] if abs(p["eta_over_sigma"] - 0.1) < 1e-9), c["curve"][0])
            value = point["learnability"]
            line += (f"; certified learnability {'abstains' if value is None else f'{value:.3f}'} "
                     f"at eta/sigma={point['eta_over_sigma']}")
    say(line)
    return section


def evaluate_all(run_: Run, out: Path, command: str, releases) -> dict:
    """The shared back half of `run` and `audit`: `releases` yields (name, released images, head)."""
    cfg, data = run_.cfg, run_.data
    with run_.stage("training"):
        clean_model, clean_hist, run_.clean_key, clean_checkpoints = train_model(
            run_, data.x_train, data.y_train, "victim", "train clean")
    say(f"clean model: test accuracy {clean_hist['final_test_accuracy']:.3f}")
    ctx = {"clean_model": clean_model, "clean_history": clean_hist, "sigma": None, "sigma_rule": None}
    if "scores" not in cfg.skip:
        with run_.stage("scores"):
            ctx["sal_clean"] = sal_scores(run_, run_.clean_key, clean_checkpoints, data.x_train, data.y_train)
    if "certify" not in cfg.skip or "recovery" not in cfg.skip:  # recovery needs sigma and the surrogate too
        with run_.stage("certification"):
            ctx["sigma"], ctx["sigma_rule"] = choose_sigma(run_, clean_model)
        say(f"sigma = {ctx['sigma']} ({ctx['sigma_rule']['rule']})")
        if "certify" not in cfg.skip:
            with run_.stage("training"):
                run_.independent_distance = independent_distance(run_, clean_model)
    report = {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": command, "seed": cfg.seed, "config": to_dict(cfg),
              "environment": environment(cfg, run_.device), "dataset": data.info(),
              "model": {"arch": run_.arch, "parameters": count_parameters(clean_model)}, "poisons": {}}
    for name, released, head in releases:
        report["poisons"][name] = evaluate_release(run_, name, released, head, ctx)
    report["timings"] = {k: round(v, 2) for k, v in run_.timings.items()}
    from certify.report import write_report  # figures and HTML are only needed at the end

    write_report(report, out)
    return report


def _check_names(cfg: RunConfig) -> list[str]:
    names = poison_names(cfg)
    for n in names:  # parameters are validated before any work
        POISONS.params(n, cfg.poison_params.get(n, {}), dataset=cfg.dataset, profile=cfg.profile)
    for n in cfg.poison_params:
        POISONS.get(n)
    return names


def _begin(cfg: RunConfig, command: str, what: str, data: Dataset | None = None) -> tuple[Path, Run]:
    out = prepare_out(cfg, command)
    if "certify" not in cfg.skip and cfg.executor == "ray":
        execution.start_ray(cfg.address, cfg.workers)  # overlaps Ray's start-up with training
    run_ = _start(cfg, data)
    mark_started(out, cfg, command)
    d = run_.data
    say(f"dataset {d.name}: {len(d.x_train)} train / {len(d.x_test)} test, {'x'.join(map(str, d.shape))}, "
        f"{d.num_classes} classes; model {run_.arch}; {what}")
    return out, run_


def run(cfg: RunConfig, command: str) -> tuple[dict, Path]:
    """`certify run`: craft each poison (the clean control `none` first) and evaluate it."""
    names = _check_names(cfg)
    out, run_ = _begin(cfg, command, f"poisons {', '.join(names)}")

    def releases():
        for name in names:
            with run_.stage("crafting"):
                released, info = craft(run_, name)
            yield name, released, {"budget": info["budget"], "parameters": info["params"]}

    return evaluate_all(run_, out, command, releases()), out


def audit(cfg: RunConfig, release: str, command: str) -> tuple[dict, Path]:
    """`certify audit`: evaluate a dataset someone already protected (no crafting).

    `cfg.dataset` is the clean source and `cfg.test` the test source; `release` must pair with the
    clean source image for image (same count, shapes and labels), checked before anything else.
    """
    from certify.data import load_split

    if cfg.test is None:
        raise UserError("audit needs --test: a clean test source disjoint from the release")
    x_rel, y_rel, _ = load_split(release, cfg.data_root, cfg.download, cfg.seed)
    x_clean, y_clean, classes = load_split(cfg.dataset, cfg.data_root, cfg.download, cfg.seed)
    x_test, y_test, test_classes = load_split(cfg.test, cfg.data_root, cfg.download, cfg.seed)
    if x_test.shape[1:] != x_clean.shape[1:] or len(test_classes) != len(classes):
        raise UserError(f"test source {cfg.test!r} does not match the clean images (shape or class count)")
    if len(x_rel) != len(x_clean):
        raise UserError(f"release {release!r} has {len(x_rel)} images but clean {cfg.dataset!r} has {len(x_clean)}")
    if x_rel.shape[1:] != x_clean.shape[1:]:
        raise UserError(f"release images are {tuple(x_rel.shape[1:])} but clean images are {tuple(x_clean.shape[1:])}")
    if not torch.equal(y_rel, y_clean):
        bad = int((y_rel != y_clean).nonzero()[0, 0])
        raise UserError(f"release and clean labels differ (first at image {bad}): they must pair image for image")
    delta = (x_rel - x_clean).reshape(len(x_rel), -1)
    linf = delta.abs().amax(1)
    budget = {"norm": "linf", "epsilon": float(linf.max()), "measured": float(linf.max()),
              "measured_mean": float(linf.mean()), "measured_l2_max": float(delta.norm(dim=1).max()),
              "measured_l2_mean": float(delta.norm(dim=1).mean()), "declared": False}
    say(f"release vs clean: per-image l-inf max {budget['measured'] * 255:.2f}/255, mean "
        f"{budget['measured_mean'] * 255:.2f}/255; l2 max {budget['measured_l2_max']:.3f}")
    data = Dataset(cfg.dataset, x_clean, y_clean, x_test, y_test, classes)
    out, run_ = _begin(cfg, command, f"auditing {release}", data)
    none = {"norm": "none", "epsilon": 0.0, "measured": 0.0}
    names = [("none", x_clean, {"budget": none})] if cfg.baseline else []
    return evaluate_all(run_, out, command, iter(names + [("release", x_rel, {"budget": budget})])), out
