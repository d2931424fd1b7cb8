"""`certify poison`: craft one poison (a cached task, as in a run) and export its release with a
manifest and the sample grid (`certify.export` writes it)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from certify.config import RunConfig
from certify.context import images
from certify import slices
from certify.crafting import SLICE as CRAFTING, budget_head, poison_params, sigma_field
from certify.export import check_target, export_released
from certify.pipeline import load_context, run_tasks
from certify.report.assemble import samples_figure


def export_poison(cfg: RunConfig, out: str, fmt: str) -> dict:
    """`certify poison`: craft one poison (cached) and write the released dataset with a manifest."""
    (name,) = cfg.poisons
    check_target(Path(out).expanduser().resolve())  # before minutes of crafting
    cfg = dataclasses.replace(cfg, executor="serial")  # one task: Ray would only add its start-up
    ctx = load_context(cfg)
    # a poison crafted at the auto σ needs the clean model (and its release) first
    auto = cfg.sigma == "auto" and sigma_field(poison_params(ctx, name)) is not None
    run = slices.add_run(ctx, slices.only("crafting", "victims")) if auto else {}
    release = CRAFTING.add(ctx, {**run, "name": name})["release"]  # before the graph runs
    crafted = run_tasks(ctx, time.time()).values[release]
    released = images(crafted["released"])
    head = budget_head(ctx, name, crafted)
    figure, idx, png = samples_figure(ctx, name, released)
    manifest = {"poison": name, "parameters": head["parameters"], "budget": head["budget"], "seed": cfg.seed,
                "dataset": ctx.data.name, "model": ctx.model.arch, "n": len(released), "classes": ctx.data.classes,
                "samples": {"figure": figure, "indices": idx}, **({"resized_to": cfg.image_size} if cfg.image_size else {})}
    export_released(released, ctx.data.y_train, ctx.data.classes, out, fmt, manifest, extra_files={figure: png})
    return manifest
