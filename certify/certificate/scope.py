"""The scope slice: what the certificate covers, measured. `victims` models (the config field, K)
are trained normally on each release at seeds of their own, and the certificate's section records
each one's l2 distance to the surrogate and how many lie within the largest certified η
(`certificate.independent_models`): a certificate about a ball no independently trained model falls into
says nothing about the models people train.

A slice of its own, before the certificate's (whose section reads its keys), so that `certify plan`,
which lists the slices it needs, does not train K models per budget. Only the first replicate seed
trains them (each is a full training; `--seeds K` would multiply that).
"""
from __future__ import annotations

from certify.context import RunContext, Slice
from certify.victims import add_victim, distance


def add_independent(ctx: RunContext, release: str, name: str, i: int) -> str:
    """The i-th model trained normally on `release` at a seed of its own (neither the victim's nor the
    surrogate's): i = 0 on the clean release is the run's independent model, one task with it."""
    return add_victim(ctx, release, name, "victim-independent" if i == 0 else f"victim-independent-{i}",
                      stage="independent", scored=False)


def victims_field(ctx: RunContext, surrogate: dict, victims: list[dict], eta: float | None) -> dict:
    """`certificate.independent_models`: each victim's l2 distance to the surrogate over the trainable parameters
    (the space the draws perturb and η measures) and how many lie within the certified η (none where
    no η is certified)."""
    dists = [distance(ctx.model, surrogate["state"], v["state"]) for v in victims]
    return {"k": len(dists), "distances": dists, "within": 0 if eta is None else sum(d <= eta for d in dists),
            "max_certified_eta": eta}


def add(ctx: RunContext, keys: dict) -> dict:
    """{"scope_victims": [keys]}: K models trained independently on the release, where certificates are
    made, for the first replicate seed."""
    if "certify" in ctx.cfg.skip or ctx.replicate != 0 or not ctx.cfg.independent_models:
        return {}
    return {"scope_victims": [add_independent(ctx, keys["release"], keys["name"], i) for i in range(ctx.cfg.independent_models)]}


def section(ctx: RunContext, keys: dict, values: dict) -> dict:
    return {}  # the certificate's section records them, beside the η they are set against


SLICE = Slice("scope", add, section)
