"""`certify run`, `audit` and `poison` as graphs of tasks: only this module knows which stages a
run has and how they connect. The slices add their tasks (crafting, victims, certificate, scores,
recovery); `certify.graph` runs them; the report is assembled from their artifacts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from attacks.base import POISONS
from certify import certificate, cluster, device as devices, replicates
from certify.cache import Cache, atomic_write, tensor_digest
from certify.config import RunConfig, to_dict
from certify.context import ModelSpec, RunContext, images
from certify.crafting import add_release, budget_head
from certify.curves import reference_point
from certify.data import Dataset, load_dataset
from certify.errors import UserError
from certify.graph import run_graph
from certify.models import check_input_size, count_parameters
from certify.progress import say
from certify.registry import CONTROL
from certify.report.content import num
from certify.recovery import add_recovery, section as recovery_section
from certify.scores.comparison import comparison
from certify.scores.stages import add_defended_sal, add_mi, add_sal, sections as score_sections
from certify.seeding import derive
from certify.verdict import verdicts
from certify.victims import add_defended, add_victim, distance, empirical_section

SCHEMA = "ue-certify/report/v1"


# --- output directory and resume --------------------------------------------------------------
def check_out(cfg: RunConfig) -> Path:
    """Check --out before any work, writing nothing: with --resume the stored configuration must
    match; otherwise it must not hold a run, and the folder must be creatable."""
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
    existing = next(p for p in [out, *out.absolute().parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        reason = "Not a directory" if not existing.is_dir() else "Permission denied"
        raise UserError(f"output directory {out} is not writable: {reason}")
    return out


def create_out(out: Path) -> None:
    """--out, made once every input has been read and checked (bad input leaves nothing behind)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory {out} is not writable: {e.strerror}") from None


def mark_started(out: Path, cfg: RunConfig, command: str) -> None:
    """run.json (what --resume checks), written once the inputs loaded, so bad input locks nothing."""
    record = {"config": _comparable(cfg), "command": command}
    atomic_write(out / "run.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))


def _comparable(cfg: RunConfig) -> dict:
    """The configuration that determines the results (not where they go or how they are resumed)."""
    d = to_dict(cfg)
    for k in ("out", "resume", "cache_dir", "executor", "workers", "address", "gpu_fraction", "connect_timeout",
              "verdict"):
        d.pop(k)  # where results go, how tasks are spread and how the report judges them do not change them
    return json.loads(json.dumps(d))


# --- the run ----------------------------------------------------------------------------------
def poison_names(cfg: RunConfig) -> list[str]:
    names = []
    for n in cfg.poisons:
        if n == "all":
            names += [e.name for e in POISONS.entries()]
        else:
            POISONS.get(n)  # unknown names fail here, before any work
            names.append(n)
    if cfg.baseline and CONTROL not in names:
        names.insert(0, CONTROL)
    if not cfg.baseline:
        names = [n for n in names if n != CONTROL]
    return list(dict.fromkeys(names))


def environment(cfg: RunConfig, device: str) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "device": devices.describe(torch.device(device)) if device == "cuda" and torch.cuda.is_available() else device,
            "executor": cfg.executor, "workers": (cfg.workers or devices.default_threads()) if cfg.executor == "ray" else 1,
            "threads": cfg.smoothing.threads}


def _context(cfg: RunConfig, data: Dataset | None = None) -> RunContext:
    cache = Cache(cfg.cache_dir)
    data = data or load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.seed, cfg.test, cfg.image_size)
    arch = cfg.model
    check_input_size(arch, data.shape)  # where dataset and model first meet, before any task
    gpus = torch.cuda.is_available()
    if cfg.executor == "ray" and cfg.address:
        gpus = cluster.connect(cfg.address, cfg.workers, cfg.connect_timeout)  # its GPUs decide where tasks compute
    digest = tensor_digest(data.x_train, data.y_train, data.x_test, data.y_test)
    ctx = RunContext(cfg, data, cache, ModelSpec(arch, data.shape, data.num_classes),
                     "cuda" if gpus else "cpu", f"data-{digest}", tensor_digest(data.x_test, data.y_test))
    ctx.graph.const(ctx.data_key, data)
    return ctx


def run_tasks(ctx: RunContext, t0: float):
    cfg = ctx.cfg
    return run_graph(ctx.graph, ctx.cache, executor=cfg.executor, t0=t0,
                     cluster=lambda: cluster.connect(cfg.address, cfg.workers, cfg.connect_timeout))


def samples_figure(ctx: RunContext, name: str, released: torch.Tensor) -> tuple[str, list[int], bytes]:
    """(file name, training indices shown, PNG) of poison `name`'s sample grid: the same seeded
    choice of images for every poison of a run."""
    from certify.report.figures import sample_grid, sample_indices, slugs

    data = ctx.data
    idx = sample_indices(data.y_train, data.num_classes, derive(ctx.cfg.seed, "samples"))
    png = sample_grid(data.x_train[idx].numpy(), images(released[idx]).numpy(), data.y_train[idx].numpy(),
                      list(data.classes), f"{name} on {data.name}: clean, released, perturbation")
    return f"samples-{slugs([name])[name]}.png", idx, png


def export_poison(cfg: RunConfig, out: str, fmt: str) -> dict:
    """`certify poison`: craft one poison (cached) and write the released dataset with a manifest."""
    from certify.export import check_target, export_released

    (name,) = cfg.poisons
    check_target(Path(out).expanduser().resolve())  # before minutes of crafting
    cfg = dataclasses.replace(cfg, executor="serial")  # one task: Ray would only add its start-up
    ctx = _context(cfg)
    release = add_release(ctx, name)  # before the graph runs: the subscript is evaluated after the call
    crafted = run_tasks(ctx, time.time()).values[release]
    released = images(crafted["released"])
    head = budget_head(ctx, name, crafted)
    figure, idx, png = samples_figure(ctx, name, released)
    manifest = {"poison": name, "parameters": head["parameters"], "budget": head["budget"], "seed": cfg.seed,
                "dataset": ctx.data.name, "model": ctx.model.arch, "n": len(released), "classes": ctx.data.classes,
                "samples": {"figure": figure, "indices": idx}, **({"resized_to": cfg.image_size} if cfg.image_size else {})}
    export_released(released, ctx.data.y_train, ctx.data.classes, out, fmt, manifest, extra_files={figure: png})
    return manifest


def _plan(ctx: RunContext, clean_release: str, releases: list[tuple[str, str]]) -> dict:
    """Every task of the evaluation: {"clean": ..., "poisons": {name: keys of its artifacts}}."""
    cfg, skip = ctx.cfg, ctx.cfg.skip
    scores, cert, rec = "scores" not in skip, "certify" not in skip, "recovery" not in skip
    plan = {"clean": add_victim(ctx, clean_release, CONTROL), "poisons": {}}
    if scores:
        plan["sal_clean"] = add_sal(ctx, clean_release, plan["clean"], CONTROL)
    sigma = certificate.add_sigma(ctx, plan["clean"]) if cert or rec else None  # recovery needs sigma too
    if cert:
        plan["independent"] = add_victim(ctx, clean_release, CONTROL, "victim-independent", stage="independent")
    for name, release in releases:
        p = {"release": release, "victim": add_victim(ctx, release, name),
             "defended": {d: add_defended(ctx, release, name, d) for d in cfg.defenses}}
        if scores:
            p["sal"] = add_sal(ctx, release, p["victim"], name)
            p["defended_sal"] = {d: add_defended_sal(ctx, release, k, name, d) for d, k in p["defended"].items()}
            p["mi"] = add_mi(ctx, plan["clean"], p["victim"], name)
        if sigma is not None:
            p["certificate"] = certificate.plan(ctx, name, release, p["victim"], sigma, draws=cert)
            if rec:
                p["recovery"] = add_recovery(ctx, p["certificate"].surrogate, sigma, name)
        plan["poisons"][name] = p
    return plan


def timings(records: list[dict], wall: float) -> dict:
    out: dict[str, float] = {}
    for r in records:
        out[r["stage"]] = out.get(r["stage"], 0.0) + r["end"] - r["start"]
    return {**{k: round(v, 2) for k, v in out.items()}, "wall": round(wall, 2)}


def _poison_section(ctx: RunContext, plan: dict, name: str, v: dict, alpha: float) -> dict:
    """One replicate's measurements of poison `name` (certificates at the replicate's level `alpha`)."""
    p, clean = plan["poisons"][name], v[plan["clean"]]
    section = {"empirical": empirical_section(clean, v[p["victim"]], {d: v[k] for d, k in p["defended"].items()})}
    if "sal" in p:
        section.update(score_sections(ctx, v[plan["sal_clean"]], v[p["sal"]], v[p["mi"]],
                                      {d: v[k] for d, k in p["defended_sal"].items()}))
    if "recovery" in p:
        section["recovery"] = recovery_section(ctx, p["recovery"], v)
    if "certificate" in p and p["certificate"].chunks:
        indep = distance(ctx.model, clean["state"], v[plan["independent"]]["state"])
        section["certificate"] = certificate.section(dataclasses.replace(ctx.cfg, alpha=alpha), p["certificate"], v,
                                                     indep)
    return section


def _progress_line(name: str, section: dict) -> str:
    e = section["empirical"]
    k = e["seeds"]
    lo, hi = e["protected_interval"]
    line = (f"{name}: protected accuracy {e['protected_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] "
            f"(clean {e['clean_accuracy']:.3f}{f'; mean over {k} seeds' if k > 1 else ''})")
    if "sal_ud" in section:
        line += f"; UD {num(section['sal_ud']['ud'])}; MI gap {section['mutual_information']['gap']:.3f}"
    if "certificate" in section:
        point = reference_point(section["certificate"]["curve"])
        value = point["learnability"]
        line += (f"; certified learnability {'abstains' if value is None else f'{value:.3f}'} "
                 f"at eta/sigma={point['eta_over_sigma']}")
    return line


def evaluate_all(ctx: RunContext, out: Path, command: str, releases_of, heads: dict, t0: float,
                 warnings: list[str] | None = None) -> dict:
    """The shared back half of `run` and `audit`. `releases_of(replicate context)` gives (key of the
    clean release, [(name, key of its released set)]) for each replicate seed; `heads` gives each
    name's budget section, or a function of its (first replicate's) crafting artifact; `warnings`
    (about the inputs) open the report."""
    cfg, data = ctx.cfg, ctx.data
    reps = replicates.contexts(ctx)
    plans = [_plan(r, *releases_of(r)) for r in reps]
    outcome = run_tasks(ctx, t0)
    v = outcome.values
    for r, plan in zip(reps, plans):
        say(f"clean model (seed {r.cfg.seed}): test accuracy {v[plan['clean']]['history']['final_test_accuracy']:.3f}")
    seeds = replicates.seeds_of(cfg)
    level = replicates.replicate_alpha(cfg.alpha, len(seeds))
    report = {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": command, "seed": cfg.seed, "seeds": seeds, "config": to_dict(cfg),
              "environment": environment(cfg, ctx.device),
              "dataset": {**data.info(), "test_digest": ctx.test_digest, "class_names": list(map(str, data.classes))},
              "model": {"arch": ctx.model.arch, "parameters": count_parameters(ctx.model.build(0))}, "poisons": {}}
    if warnings:
        report["warnings"] = list(warnings)
    pictures = {}
    for name, p in plans[0]["poisons"].items():
        head = heads[name]
        section = dict(head(v[p["release"]]) if callable(head) else head)
        if name != CONTROL:  # the control's released images are the clean ones
            figure, idx, pictures[figure] = samples_figure(ctx, name, v[p["release"]]["released"])
            section["samples"] = {"indices": idx}
        measured = [_poison_section(r, plan, name, v, level) for r, plan in zip(reps, plans)]
        section.update(replicates.combine(measured, seeds, len(data.y_test), cfg.alpha))
        say(_progress_line(name, section))
        report["poisons"][name] = section
    if any(n != CONTROL for n in report["poisons"]):
        report["comparison"] = comparison(report["poisons"])
    for name, verdict in verdicts(report["poisons"], cfg.verdict).items():
        report["poisons"][name]["verdict"] = verdict
        say(f"verdict {name}: {verdict['level']}")
    report["timings"] = timings(outcome.records, time.time() - t0)
    report["execution"] = {"executor": cfg.executor, "cached": outcome.cached, "tasks": outcome.records}
    from certify.report import write_report  # figures and HTML are only needed at the end

    write_report(report, out, pictures)
    return report


def _check_names(cfg: RunConfig) -> list[str]:
    names = poison_names(cfg)
    for n in names:  # parameters are validated before any work
        POISONS.params_for(n, cfg)
    for n in cfg.poison_params:
        POISONS.get(n)
    return names


def begin(cfg: RunConfig, command: str, what: str, data: Dataset | None = None) -> tuple[Path, RunContext, float]:
    t0 = time.time()
    out = check_out(cfg)
    if cfg.executor == "ray":
        if cfg.address:
            cluster.probe(cfg.address, cfg.connect_timeout)  # before any work
        cluster.start(cfg.address, cfg.workers)  # overlaps Ray's start-up with loading and planning
    ctx = _context(cfg, data)
    create_out(out)
    mark_started(out, cfg, command)
    d = ctx.data
    say(f"dataset {d.name}: {len(d.x_train)} train / {len(d.x_test)} test, {'x'.join(map(str, d.shape))}, "
        f"{d.num_classes} classes; model {ctx.model.arch}; {what}")
    return out, ctx, t0


def run(cfg: RunConfig, command: str) -> tuple[dict, Path]:
    """`certify run`: craft each poison (the clean control `none` first) and evaluate it."""
    names = _check_names(cfg)
    out, ctx, t0 = begin(cfg, command, f"poisons {', '.join(names)}")
    heads = {name: (lambda r, n=name: budget_head(ctx, n, r)) for name in names}

    def releases_of(rep: RunContext):  # crafting is seeded: each replicate crafts its own releases
        return add_release(rep, CONTROL), [(name, add_release(rep, name)) for name in names]

    return evaluate_all(ctx, out, command, releases_of, heads, t0), out
