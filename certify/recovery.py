"""The recovery slice: each recovery attack starts from a release's certified surrogate (the
certificate slice's) and reports clean test accuracy against eta (multiples of the run's sigma)."""
from __future__ import annotations

import dataclasses

from attacks.recovery import RECOVERY
from certify.certificate import sigma_input
from certify.context import ModelSpec, RunContext, Slice, task_device
from certify.data import Dataset
from certify.seeding import derive


def recovery_task(data: Dataset, surrogate: dict, sigma: float, *, method: str, params, seed: int,
                  eta_sigma: list[float], attacker_fraction: float, attacker_seed: int, model: ModelSpec,
                  device: str) -> dict:
    from attacks.recovery import RecoveryInputs, attacker_split

    x_att, y_att = attacker_split(data.x_train, data.y_train, attacker_fraction, attacker_seed)
    net = model.load(surrogate["state"], task_device(device))
    inputs = RecoveryInputs(net, x_att, y_att, data.x_test, data.y_test, [r * sigma for r in eta_sigma], seed)
    return {"curve": RECOVERY.get(method).factory(inputs, params), "attacker_images": len(x_att)}


def add_recovery(ctx: RunContext, surrogate: str, sigma: str, name: str) -> dict[str, str]:
    """One task per recovery method: {method: key}."""
    cfg, rc = ctx.cfg, ctx.cfg.recovery
    keys = {}
    for method in rc.methods:
        spec = {"method": method, "params": RECOVERY.params_for(method, cfg),
                "seed": derive(cfg.seed, "recovery", method), "eta_sigma": rc.eta_sigma,
                "attacker_fraction": rc.attacker_fraction, "attacker_seed": derive(cfg.seed, "attacker-set")}
        keys[method] = ctx.cached("recovery", spec, recovery_task, (ctx.data_key, surrogate, sigma_input(sigma)),
                                  poison=name,
                                  code=RECOVERY.code(method))
    return keys


def add(ctx: RunContext, keys: dict) -> dict:
    """{"recovery": {method: key}} from the surrogate, unless recovery is skipped."""
    if "recovery" in ctx.cfg.skip or "surrogate" not in keys:
        return {}
    return {"recovery": add_recovery(ctx, keys["surrogate"], keys["sigma"], keys["name"])}


def section(ctx: RunContext, keys: dict, values: dict) -> dict:
    if "recovery" not in keys:
        return {}
    cfg, rc = ctx.cfg, ctx.cfg.recovery
    out = {}
    for method, key in keys["recovery"].items():
        params = RECOVERY.params_for(method, cfg)
        art = values[key]
        out[method] = {"start": "surrogate", "bn": params.bn, "constraint": params.constraint,
                       "attacker_images": art["attacker_images"], "params": dataclasses.asdict(params),
                       "curve": [{"eta": p["eta"], "eta_over_sigma": r, "accuracy": p["accuracy"]}
                                 for p, r in zip(art["curve"], rc.eta_sigma)]}
    return {"recovery": out}


SLICE = Slice("recovery", add, section)
