"""The poisons slice: crafting a poison is one task; its report head is the measured budget.

The released set is stored as 8-bit images, as a data owner would publish it. The clean control
`none` releases the clean images, so the clean model is the model trained on `none`'s release and
the two are one task.
"""
from __future__ import annotations

import dataclasses

import torch

from attacks.base import POISONS, CraftContext, check_budget
from certify.context import ModelSpec, RunContext, images, task_device
from certify.data import Dataset
from certify.seeding import derive
from certify.training import TrainConfig


def craft_task(data: Dataset, *, poison: str, params, seed: int, training: TrainConfig, model: ModelSpec,
               device: str) -> dict:
    dev = task_device(device)
    ctx = CraftContext(data.x_train, data.y_train, data.num_classes, lambda s: model.build(s, dev), training, seed, dev)
    released = POISONS.get(poison).factory(ctx, params)
    check_budget(poison, data.x_train, released, type(params).norm, float(params.epsilon_for(data.shape)))
    return {"released": torch.round(released * 255).to(torch.uint8)}


def poison_params(ctx: RunContext, name: str):
    cfg = ctx.cfg
    return POISONS.params(name, cfg.poison_params.get(name, {}), dataset=cfg.dataset, profile=cfg.profile)


def add_release(ctx: RunContext, name: str, params=None, label: str | None = None) -> str:
    """The task crafting poison `name` from the run's clean training split; `params` replace the
    run's parameters of it (`certify plan` varies the budget), `label` names the task in progress."""
    spec = {"poison": name, "params": poison_params(ctx, name) if params is None else params,
            "seed": derive(ctx.cfg.seed, "poison", name), "training": ctx.cfg.train}
    return ctx.cached("craft", spec, craft_task, (ctx.data_key,), poison=label or name)


def budget_head(ctx: RunContext, name: str, released: torch.Tensor) -> dict:
    """The report's budget and parameters of a crafted release (checked against the poison's budget)."""
    params = poison_params(ctx, name)
    norm = type(params).norm
    epsilon = float(params.epsilon_for(ctx.data.shape))
    measured = check_budget(name, ctx.data.x_train, images(released), norm, epsilon)
    return {"budget": {"norm": norm, "epsilon": epsilon, "measured": measured},
            "parameters": dataclasses.asdict(params) if params else {}}
