"""The recovery slice: each recovery attack starts from a release's certified surrogate (the
certificate slice's) and reports clean test accuracy against eta (multiples of the run's sigma).

Early stopping: the attacker holds its own clean split D_r (`attacker_images`), so it can pick the
point of the curve that does best there; `certify.curves.early_stop` is that choice, and `chosen` in the report is
the point it picks, with its test accuracy (what the verdict and the replicates read). A curve
without attacker-split accuracies (an attack that does not record them, or an older report) cannot
be early-stopped: its test-set peak stands in, an upper bound on what the attacker can reach."""
from __future__ import annotations

import dataclasses
import math

from attacks.recovery import RECOVERY
from certify.certificate import sigma_input
from certify.context import ModelSpec, RunContext, Slice, task_device
from certify.curves import early_stop
from certify.data import Dataset
from certify.errors import UserError
from certify.plugins import BUILT_IN
from certify.seeding import derive
from certify.validation import shown


def recovery_task(data: Dataset, surrogate: dict, sigma: float, *, method: str, params, seed: int,
                  eta_sigma: list[float], attacker_fraction: float, attacker_seed: int, model: ModelSpec,
                  device: str) -> dict:
    from attacks.recovery import RecoveryInputs, attacker_split

    x_att, y_att = attacker_split(data.x_train, data.y_train, attacker_fraction, attacker_seed)
    net = model.load(surrogate["state"], task_device(device))
    inputs = RecoveryInputs(net, x_att, y_att, data.x_test, data.y_test, [r * sigma for r in eta_sigma], seed)
    curve = RECOVERY.call(method, "recover", inputs, params)
    if RECOVERY.get(method).origin != BUILT_IN:
        curve = checked_curve(method, curve, inputs.etas)
    return {"curve": curve, "attacker_images": len(x_att)}


def checked_curve(method: str, curve, etas: list[float]) -> list[dict]:
    """What a plugin's recovery attack must return: one point per eta, in order, each a
    dict with `eta` and `accuracy` (and optionally `attacker_accuracy`), accuracies numbers in [0, 1];
    anything else is one line naming the attack, before it is cached or reported. Returns the points
    with plain floats."""
    where = f"recovery attack {RECOVERY.label(method)}: recover returned"
    if not isinstance(curve, (list, tuple)) or len(curve) != len(etas):
        got = f"{len(curve)} points" if isinstance(curve, (list, tuple)) else type(curve).__name__
        raise UserError(f"{where} {got}; expected a list of {len(etas)} points (one per eta)")
    out = []
    for i, (point, eta) in enumerate(zip(curve, etas)):
        if not isinstance(point, dict) or "eta" not in point or "accuracy" not in point:
            raise UserError(f"{where} point {i} as {type(point).__name__}"
                            f"{' with keys ' + ', '.join(map(str, point)) if isinstance(point, dict) else ''}; "
                            f"expected a dict with eta and accuracy")
        clean = {}
        for key in ("eta", "accuracy", "attacker_accuracy"):
            if key not in point:
                continue
            v = point[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
                    key != "eta" and not 0 <= v <= 1):
                raise UserError(f"{where} {key} {shown(v)} at point {i}; expected "
                                f"{'a finite number' if key == 'eta' else 'a number in [0, 1]'}")
            clean[key] = float(v)
        if not math.isclose(clean["eta"], eta, rel_tol=1e-6, abs_tol=1e-12):
            raise UserError(f"{where} eta {clean['eta']:g} at point {i}; expected {eta:g} (the etas it was given, in order)")
        out.append(clean)
    return out


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
