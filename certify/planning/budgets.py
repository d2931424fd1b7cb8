"""Budgets as typed (`NORM:VALUE`; the one parser, shared with `certify audit --budget`) and the
budgets a plan tries: parsed from `--budgets`, checked against the poison, and put into the
poison's own parameters (its `epsilon` field, l-inf or l2 by the poison's `norm`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

from attacks.base import STORAGE_LEVELS
from certify.errors import UserError

VARIABLE_NORMS = ("linf", "l2")  # l0 (OPS: one pixel) and none have no budget to vary
GRID_TOLERANCE = 1e-6  # in 8-bit steps: 8/255 typed as 0.0313725 is still on the grid
# budgets in one plan: each is a full craft, train and certificate (a plan of 255 l-inf budgets is days
# of work, and the table and figure stop being readable long before)
MAX_PLAN_BUDGETS = 32


def parse_budget(spec: str) -> dict:
    """`linf:8/255` or `l2:0.5` -> {"norm", "epsilon"} (`certify audit --budget`; each of `--budgets`)."""
    norm, _, value = spec.partition(":")
    try:
        eps = float(Fraction(value.strip())) if value.strip() else -1.0
    except (ValueError, ZeroDivisionError, OverflowError):
        eps = -1.0
    if norm not in VARIABLE_NORMS or not 0 < eps < float("inf"):
        raise UserError(f"--budget {spec!r}: expected NORM:VALUE with NORM one of {', '.join(VARIABLE_NORMS)} and a "
                        "positive VALUE such as 8/255 or 0.5")
    return {"norm": norm, "epsilon": eps}


@dataclass(frozen=True)
class Budget:
    label: str  # as typed, e.g. "8/255": the plan's name for it
    norm: str
    epsilon: float


def _one(item: str, norm: str) -> Budget:
    spec = item if ":" in item else f"{norm}:{item}"
    try:
        parsed = parse_budget(spec)
    except UserError:
        raise UserError(f"--budgets: {item!r} is not a budget; expected a positive number such as 8/255 or 0.5 "
                        f"(or {norm}:VALUE)") from None
    if parsed["norm"] != norm:
        raise UserError(f"--budgets: {item!r} is an {parsed['norm']} budget, but the poison's budget is {norm}")
    eps, label = parsed["epsilon"], item.partition(":")[2] if ":" in item else item
    if norm == "linf":
        # releases are 8-bit: a delta clamped to an off-grid epsilon can round past it
        steps = eps * STORAGE_LEVELS
        if not 1 <= round(steps) <= STORAGE_LEVELS or abs(steps - round(steps)) > GRID_TOLERANCE:
            raise UserError(f"--budgets: {item!r}: an linf budget must be a whole number of 8-bit steps, k/255 "
                            f"with k = 1..{STORAGE_LEVELS} (releases are stored as 8-bit images)")
        eps = round(steps) / STORAGE_LEVELS  # exactly k/255: the key of the run's own 8/255 craft task
    return Budget(label.strip(), norm, eps)


def parse_budgets(text: str, norm: str) -> list[Budget]:
    """`2/255,8/255,4/255` -> budgets sorted by size, duplicates (by value) dropped; `norm` is the
    poison's, and each item may be a bare value or `NORM:VALUE`."""
    if norm not in VARIABLE_NORMS:
        raise UserError(f"the poison's budget is {norm}: plan varies {' or '.join(VARIABLE_NORMS)} budgets only")
    items = [i.strip() for i in text.split(",") if i.strip()]
    if not items:
        raise UserError("--budgets: expected a comma-separated list such as 2/255,4/255,8/255")
    if len(items) > MAX_PLAN_BUDGETS:  # counted as typed, before any is parsed
        raise UserError(f"--budgets: {len(items):,} budgets, over the limit of {MAX_PLAN_BUDGETS} in one plan "
                        "(each is a full craft, training and certificate)")
    unique: dict[float, Budget] = {}
    for item in items:
        b = _one(item, norm)
        unique.setdefault(b.epsilon, b)
    return [unique[e] for e in sorted(unique)]


def with_budget(params, budget: Budget, where: str):
    """The poison's parameters with its budget field replaced (validated like any other value)."""
    replaced = dataclasses.replace(params, epsilon=budget.epsilon)
    replaced.validate(where)
    return replaced
