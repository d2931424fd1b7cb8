"""The slices of an evaluation, in the order their tasks are added, and the loops that add them.

Each slice is one module offering a `SLICE` (`certify.context.Slice`: `run`, `add`, `section`); a new
stage is one new module and one line in `SLICES`. `certify run` and `certify audit` use them all;
`certify plan` a declared sub-list (`only`). A slice may read the keys of the slices before it,
never after.
"""
from __future__ import annotations

from certify import certificate, crafting, panel, recovery, victims
from certify.certificate import scope
from certify.context import RunContext, Slice
from certify.scores import stages as scores

SLICES: tuple[Slice, ...] = (
    crafting.SLICE,      # craft: the released set (given by `audit`); run: the clean release
    victims.SLICE,       # train, defended; run: the clean model
    panel.SLICE,         # the other victim architectures (--victims): train, defended; run: their clean models
    scores.SLICE,        # sal, sal-defended, mi; run: SAL of the clean model
    scope.SLICE,         # K victims trained independently on the release (read by the certificate's section)
    certificate.SLICE,   # surrogate, draws; run: σ, the independent model
    recovery.SLICE,      # recovery, from the surrogate
)


def only(*names: str) -> tuple[Slice, ...]:
    """The slices named, in the order of `SLICES`."""
    unknown = set(names) - {s.name for s in SLICES}
    if unknown:
        raise ValueError(f"no such slice: {sorted(unknown)}")
    return tuple(s for s in SLICES if s.name in names)


def add_run(ctx: RunContext, slices: tuple[Slice, ...], keys: dict | None = None) -> dict:
    """The run-level tasks of `slices` (once per replicate context); `keys` what is given already."""
    keys = dict(keys or {})
    for s in slices:
        if s.run is not None:
            keys.update(s.run(ctx, keys))
    return keys


def add_poison(ctx: RunContext, slices: tuple[Slice, ...], run: dict, given: dict) -> dict:
    """One poison's tasks, slice by slice: its plan (the run's keys, `given`, and every key added)."""
    keys = {**run, **given}
    for s in slices:
        keys.update(s.add(ctx, keys))
    return keys


def sections(ctx: RunContext, slices: tuple[Slice, ...], keys: dict, values: dict) -> dict:
    """One replicate's report section of a poison: each slice's fields, in the order of `slices`."""
    out: dict = {}
    for s in slices:
        out.update(s.section(ctx, keys, values))
    return out
