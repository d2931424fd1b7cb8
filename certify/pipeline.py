"""`certify run` and `certify audit` as one graph of tasks: this module plans it. Which stages a run
has and in which order is `certify.slices.SLICES` (each slice adds its tasks); `certify.graph` runs
them; `certify.report.assemble` turns the artifacts into the report; `certify.rundir` owns --out.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from attacks.base import POISONS
from certify import cluster, replicates, slices
from certify.cache import Cache, tensor_digest
from certify.config import RunConfig
from certify.context import ModelSpec, RunContext
from certify.data import Dataset, load_dataset
from certify.graph import run_graph
from certify.models import check_input_size
from certify.progress import say
from certify.registry import CONTROL
from certify.report.assemble import assemble
from certify.rundir import check_out, create_out, mark_started


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


def load_context(cfg: RunConfig, data: Dataset | None = None) -> RunContext:
    cache = Cache(cfg.cache_dir)
    data = data or load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.seed, cfg.test, cfg.image_size)
    arch = cfg.model
    for a in dict.fromkeys([arch, *cfg.panel()]):
        check_input_size(a, data.shape)  # where dataset and models first meet, before any task
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


def add_tasks(ctx: RunContext, run: dict, poisons: list[dict]) -> dict:
    """Every task of the evaluation for one replicate context, slice by slice: `run` the run-level
    keys given (audit: the clean release), `poisons` one dict per poison (`name`; what is given:
    `release`, `head`). Returns {"run": run-level keys, "poisons": {name: its keys}}."""
    run = slices.add_run(ctx, slices.SLICES, run)
    return {"run": run, "poisons": {p["name"]: slices.add_poison(ctx, slices.SLICES, run, p) for p in poisons}}


def evaluate_all(ctx: RunContext, out: Path, command: str, given, t0: float, warnings: list[str] | None = None) -> dict:
    """The shared back half of `run` and `audit`. `given(replicate context)` gives (the run-level keys
    given, [one dict per poison: its `name` and what is given]) for each replicate seed; `warnings`
    (about the inputs) open the report."""
    reps = replicates.contexts(ctx)
    plans = [add_tasks(r, *given(r)) for r in reps]
    return assemble(ctx, reps, plans, run_tasks(ctx, t0), out, command, t0, warnings)


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
        if cfg.address:  # joined once the data are loaded, with the client's own logging muted
            cluster.probe(cfg.address, cfg.connect_timeout)  # before any work
        else:
            cluster.start(None, cfg.workers)  # overlaps Ray's start-up with loading and planning
    ctx = load_context(cfg, data)
    create_out(out)
    mark_started(out, cfg, command)
    d = ctx.data
    say(f"dataset {d.name}: {len(d.x_train)} train / {len(d.x_test)} test, {'x'.join(map(str, d.shape))}, "
        f"{d.num_classes} classes; model {ctx.model.arch}{_panel(cfg)}; {what}")
    return out, ctx, t0


def _panel(cfg: RunConfig) -> str:
    return f", victims {', '.join(cfg.panel())}" if cfg.panel() != [cfg.model] else ""


def run(cfg: RunConfig, command: str) -> tuple[dict, Path]:
    """`certify run`: craft each poison (the clean control `none` first) and evaluate it (crafting is
    seeded: each replicate crafts its own releases)."""
    names = _check_names(cfg)
    out, ctx, t0 = begin(cfg, command, f"poisons {', '.join(names)}")
    return evaluate_all(ctx, out, command, lambda rep: ({}, [{"name": name} for name in names]), t0), out
