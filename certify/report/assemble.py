"""The report of `certify run` and `certify audit`, assembled from the artifacts of its graph: each
slice's section per replicate (certificates at α/K), combined over the seeds
(`certify.replicates.combine`), the sample grids, the comparison across poisons, the verdicts,
timings and environment; then `write_report`."""
from __future__ import annotations

import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from attacks.base import undershoot
from certify import cluster, device as devices, panel, replicates, slices
from certify.config import RunConfig, to_dict
from certify.context import RunContext, images
from certify.curves import reference_point
from certify.models import count_parameters
from certify.progress import say
from certify.registry import CONTROL
from certify.report.content import num
from certify.scores.comparison import comparison
from certify.seeding import derive
from certify.verdict import verdicts

SCHEMA = "ue-certify/report/v1"


def test_set_of(cfg) -> str:
    """What the accuracies and the certificate were measured on: `--test`, or the dataset's own split."""
    return cfg.test or f"{cfg.dataset}:test"


def _workers(cfg: RunConfig) -> int:
    """The CPUs the run's tasks had: the Ray instance's own count where it ran (a cluster's real
    resources, not a flag), else what a local instance would have been given."""
    if cfg.executor != "ray":
        return 1
    return cluster.cpus() or cfg.workers or devices.default_threads()


def environment(cfg: RunConfig, device: str) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "device": devices.describe(torch.device(device)) if device == "cuda" and torch.cuda.is_available() else device,
            "executor": cfg.executor, "workers": _workers(cfg),
            "threads": cfg.smoothing.threads}


def timings(records: list[dict], wall: float) -> dict:
    out: dict[str, float] = {}
    for r in records:
        out[r["stage"]] = out.get(r["stage"], 0.0) + r["end"] - r["start"]
    return {**{k: round(v, 2) for k, v in out.items()}, "wall": round(wall, 2)}


def samples_figure(ctx: RunContext, name: str, released: torch.Tensor) -> tuple[str, list[int], bytes]:
    """(file name, training indices shown, PNG) of poison `name`'s sample grid: the same seeded
    choice of images for every poison of a run."""
    from certify.report.figures import sample_grid, sample_indices, slugs

    data = ctx.data
    idx = sample_indices(data.y_train, data.num_classes, derive(ctx.cfg.seed, "samples"))
    png = sample_grid(data.x_train[idx].numpy(), images(released[idx]).numpy(), data.y_train[idx].numpy(),
                      list(data.classes), f"{name} on {data.name}: clean, released, perturbation")
    return f"samples-{slugs([name])[name]}.png", idx, png


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


# the order of a poison's fields in report.json: the head, the samples, then the measurements
_HEAD = ("budget", "parameters", "origin")


def _poison_section(ctx: RunContext, reps: list[RunContext], plans: list[dict], name: str, v: dict,
                    pictures: dict) -> dict:
    """Poison `name`'s report section: each replicate's slice sections (certificates at α/K) combined."""
    cfg = ctx.cfg
    seeds = replicates.seeds_of(cfg)
    measured = [slices.sections(replicates.certifying(r, len(reps)), slices.SLICES, plan["poisons"][name], v)
                for r, plan in zip(reps, plans)]
    section = {k: measured[0][k] for k in _HEAD if k in measured[0]}
    if name != CONTROL:  # the control's released images are the clean ones
        figure, idx, pictures[figure] = samples_figure(ctx, name, v[plans[0]["poisons"][name]["release"]]["released"])
        section["samples"] = {"indices": idx}
    section.update(replicates.combine(measured, seeds, len(ctx.data.y_test), cfg.alpha))
    return section


def assemble(ctx: RunContext, reps: list[RunContext], plans: list[dict], outcome, out: Path, command: str,
             t0: float, warnings: list[str] | None = None) -> dict:
    """report.json (and md, html, figures) from the graph's `outcome`; `plans` are
    `pipeline.add_tasks`'s, one per replicate context of `reps`; `warnings` (about the inputs) open it."""
    cfg, data, v = ctx.cfg, ctx.data, outcome.values
    for r, plan in zip(reps, plans):
        say(f"clean model (seed {r.cfg.seed}): test accuracy "
            f"{v[plan['run']['clean']]['history']['final_test_accuracy']:.3f}")
    report = {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": command, "seed": cfg.seed, "seeds": replicates.seeds_of(cfg), "config": to_dict(cfg),
              "environment": environment(cfg, ctx.device),
              "dataset": {**data.info(), "test_digest": ctx.test_digest, "test_source": test_set_of(cfg),
                          "class_names": list(map(str, data.classes))},
              "model": {"arch": ctx.model.arch, "parameters": count_parameters(ctx.model.build(0))}, "poisons": {}}
    if panel.summary(ctx):
        report["victims"] = panel.summary(ctx)
    if warnings:
        report["warnings"] = list(warnings)
    pictures: dict[str, bytes] = {}
    for name in plans[0]["poisons"]:
        section = _poison_section(ctx, reps, plans, name, v, pictures)
        say(_progress_line(name, section))
        report["poisons"][name] = section
    # crafted here (an audited release's budget is the one declared for it, judged by the audit)
    short = [w for n, sec in report["poisons"].items() if n != CONTROL and "declared" not in sec["budget"]
             for w in [undershoot(n, sec["budget"]["norm"], sec["budget"]["epsilon"], sec["budget"]["measured"])] if w]
    for w in short:
        print(f"certify: warning: {w}", file=sys.stderr, flush=True)
    if short:
        report["warnings"] = report.get("warnings", []) + short
    if any(n != CONTROL for n in report["poisons"]):
        report["comparison"] = comparison(report["poisons"], seed=cfg.seed)
    for name, verdict in verdicts(report["poisons"], cfg.verdict, ctx.model.arch).items():
        report["poisons"][name]["verdict"] = verdict
        say(f"verdict {name}: {verdict['level']}")
    report["timings"] = timings(outcome.records, time.time() - t0)
    report["execution"] = {"executor": cfg.executor, "cached": outcome.cached, "tasks": outcome.records}
    from certify.report import write_report  # figures and HTML are only needed at the end

    write_report(report, out, pictures)
    return report
