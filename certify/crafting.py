"""The poisons slice: crafting a poison is one task; its report head is the measured budget.

The released set is stored as 8-bit images, as a data owner would publish it. The clean control
`none` releases the clean images, so the clean model is the model trained on `none`'s release and
the two are one task.

A poison crafted for a certificate (PUE) names, as `run_sigma` on its parameter class, the field
that takes the run's σ when the user leaves it unset: its crafting task then takes the run's σ as an
input (`certificate.sigma_input`: the constant of `--sigma F`, or the auto rule's task on the clean
model), so it runs after σ is known and its key follows σ's. A value the user sets wins.

`SLICE`: its run part adds the clean release; per poison it crafts the release (unless one is given,
as `certify audit` does), and its section is the budget head (or the head given).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from attacks.base import POISONS, CraftContext, check_budget, check_release
from certify import certificate
from certify.context import ModelSpec, RunContext, Slice, images, task_device
from certify.data import Dataset
from certify.errors import UserError
from certify.plugins import BUILT_IN, one_line
from certify.registry import CONTROL
from certify.seeding import derive
from certify.training import TrainConfig
from certify.validation import shown


def sigma_field(params) -> str | None:
    """The field of `params` to fill with the run's σ: declared by the poison and left unset."""
    name = getattr(type(params), "run_sigma", None)
    return name if name and getattr(params, name) is None else None


def craft_task(data: Dataset, *sigma: float, poison: str, params, seed: int, model: ModelSpec, device: str,
               training: TrainConfig | None = None) -> dict:
    """The released set of `poison`; with the run's σ as input, crafted at that σ (recorded).
    A poison that uses no model (`uses_model = False`) gets no model factory and no `training`."""
    dev = task_device(device)
    extra = {}
    if sigma:
        extra["sigma"] = sigma[0]
        params = dataclasses.replace(params, **{sigma_field(params): extra["sigma"]})
    make_model = (lambda s: model.build(s, dev)) if type(params).uses_model else None
    x, y = data.x_train, data.y_train
    if POISONS.get(poison).origin != BUILT_IN:  # a plugin writing into ctx.x would change the clean set itself
        x, y = x.clone(), y.clone()
    ctx = CraftContext(x, y, data.num_classes, make_model, training, seed, dev)
    released = check_release(POISONS.label(poison), data.x_train, POISONS.call(poison, "craft", ctx, params))
    check_budget(POISONS.label(poison), data.x_train, released, type(params).norm,
                 applied_epsilon(poison, params, data.shape))
    return {"released": torch.round(released * 255).to(torch.uint8), **extra}


def applied_epsilon(poison: str, params, shape: tuple) -> float:
    """The budget `params.epsilon_for(shape)`: a plugin's (its Params may override it) behind the same
    boundary as its craft, and a finite number >= 0."""
    if POISONS.get(poison).origin == BUILT_IN:
        return float(params.epsilon_for(shape))
    where = f"poison {POISONS.label(poison)}: epsilon_for"
    try:
        eps = params.epsilon_for(shape)
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise UserError(f"{where} failed: {one_line(e)}") from None
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise UserError(f"{where} returned {shown(eps)}; expected a finite number >= 0")
    return float(eps)


def fits(data: Dataset) -> Callable[[dict], bool]:
    """Whether a cached crafting artifact is a release of `data`'s training images (8-bit, their
    shape): one of another shape or type under the same key (another version's, or planted) is made
    again, not handed to training."""
    shape = tuple(data.x_train.shape)
    return lambda a: (type(a.get("released")) is torch.Tensor and a["released"].dtype == torch.uint8
                      and a["released"].layout == torch.strided and a["released"].device.type != "meta"
                      and tuple(a["released"].shape) == shape)


def poison_params(ctx: RunContext, name: str):
    return POISONS.params_for(name, ctx.cfg)


def add_release(ctx: RunContext, name: str, params=None, label: str | None = None, sigma: str | None = None) -> str:
    """The task crafting poison `name` from the run's clean training split; `params` replace the
    run's parameters of it (`certify plan` varies the budget), `label` names the task in progress,
    `sigma` is the key of the run's σ (needed where the poison takes it)."""
    params = poison_params(ctx, name) if params is None else params
    spec = {"poison": name, "params": params, "seed": derive(ctx.cfg.seed, "poison", name),
            **({"training": ctx.cfg.train} if type(params).uses_model else {})}  # model-free: not read
    if sigma_field(params) is None:
        return ctx.cached("craft", spec, craft_task, (ctx.data_key,), poison=label or name, code=POISONS.code(name),
                          accept=fits(ctx.data))
    if sigma is None:
        raise ValueError(f"poison {name} is crafted at the run's sigma: give its key")
    return ctx.cached("craft", spec, craft_task, (ctx.data_key, certificate.sigma_input(sigma)),
                      poison=label or name, code=POISONS.code(name), accept=fits(ctx.data))


def budget_head(ctx: RunContext, name: str, crafted: dict, params=None) -> dict:
    """The report's budget (checked against the poison's), parameters and origin (built-in or a
    plugin's distribution) of a crafted release; the parameters carry the σ it was crafted at, where
    it took the run's. `params`: the poison's parameters it was crafted with (default: the run's)."""
    params = poison_params(ctx, name) if params is None else params
    if "sigma" in crafted:
        params = dataclasses.replace(params, **{sigma_field(params): crafted["sigma"]})
    norm = type(params).norm
    epsilon = applied_epsilon(name, params, ctx.data.shape)
    measured = check_budget(name, ctx.data.x_train, images(crafted["released"]), norm, epsilon)
    return {"budget": {"norm": norm, "epsilon": epsilon, "measured": measured},
            "parameters": dataclasses.asdict(params) if params else {}, "origin": POISONS.get(name).origin}


def run(ctx: RunContext, keys: dict) -> dict:
    """The clean release (`none`'s: the clean images), unless one is given."""
    return {} if "clean_release" in keys else {"clean_release": add_release(ctx, CONTROL)}


def add(ctx: RunContext, keys: dict) -> dict:
    """The release of `keys["poison"]` (default: its `name`) at `params` (default: the run's), unless
    one is given. A poison crafted at the run's σ adds σ's task where the run plans none."""
    if "release" in keys:
        return {}
    name = keys.get("poison", keys["name"])
    params = keys.get("params") or poison_params(ctx, name)
    sigma = keys.get("sigma")
    if sigma is None and sigma_field(params) is not None:
        sigma = certificate.add_sigma(ctx, keys.get("clean"))  # a fixed σ needs no clean model
    return {"release": add_release(ctx, name, params, keys["name"], sigma)}


def section(ctx: RunContext, keys: dict, values: dict) -> dict:
    """The poison's head: the one given, or its crafted release's budget, parameters and origin."""
    if "head" in keys:
        return dict(keys["head"])
    return budget_head(ctx, keys.get("poison", keys["name"]), values[keys["release"]], keys.get("params"))


SLICE = Slice("crafting", add, section, run)
