"""The recovery slice: each recovery attack starts from a release's certified surrogate (the
certificate slice's) and reports clean test accuracy against eta (multiples of the run's sigma).

Early stopping: the attacker holds its own clean split D_r (`attacker_images`), so it can pick the
point of the curve that does best there; `certify.curves.early_stop` is that choice, and `chosen` in the report is
the point it picks, with its test accuracy (what the verdict and the replicates read). A curve
without attacker-split accuracies (an attack that does not record them, or an older report) cannot
be early-stopped: its test-set peak stands in, an upper bound on what the attacker can reach."""
from __future__ import annotations

import dataclasses

from attacks.recovery import RECOVERY
from certify.certificate import sigma_input
from certify.context import ModelSpec, RunContext, Slice, task_device
from certify.curves import early_stop
from certify.data import Dataset
from certify.seeding import derive


def recovery_task(data: Dataset, surrogate: dict, sigma: float, *, method: str, params, seed: int,
                  eta_sigma: list[float], attacker_fraction: float, attacker_seed: int, model: ModelSpec,
                  device: str) -> dict:
    from attacks.recovery import RecoveryInputs, attacker_split

    x_att, y_att = attacker_split(data.x_train, data.y_train, attacker_fraction, attacker_seed)
    net = model.load(surrogate["state"], task_device(device))
    inputs = RecoveryInputs(net, x_att, y_att, data.x_test, data.y_test, [r * sigma for r in eta_sigma], seed)
    return {"curve": RECOVERY.call(method, "recover", inputs, params), "attacker_images": len(x_att)}


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
        curve = [{"eta": p["eta"], "eta_over_sigma": r, "accuracy": p["accuracy"],
                  **({"attacker_accuracy": p["attacker_accuracy"]} if "attacker_accuracy" in p else {})}
                 for p, r in zip(art["curve"], rc.eta_sigma)]
        out[method] = {"start": "surrogate", "bn": params.bn, "constraint": params.constraint,
                       "attacker_images": art["attacker_images"], "params": dataclasses.asdict(params),
                       "curve": curve, "chosen": early_stop(curve)}
    return {"recovery": out}


SLICE = Slice("recovery", add, section)
