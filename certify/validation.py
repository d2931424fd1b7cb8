"""Small checks that raise a one-line UserError naming the field and what is allowed."""
from __future__ import annotations

import math
import reprlib

from certify.errors import UserError

# Valid but absurd values are refused up front, naming the limit (README, "Limits"). Each section
# keeps its own limits beside its fields; these are shared by several sections.
MAX_EPOCHS = 10_000  # train.epochs, surrogate.epochs: a typo here would train for days
MAX_THREADS = 1024  # threads, smoothing.threads, workers: each thread asks the scheduler for a CPU
MAX_CROP = 64  # random-crop padding (train.crop, rem.crop, ar.crop) sizes a padded copy of every batch


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxset = 2, 4, 4, 4, 4
_SHORT.maxstring = _SHORT.maxother = 40


def shown(value) -> str:
    """A value for a message: a number of thousands of digits is shown by its length; a container by
    its first items (YAML aliases can make one of 10**9 items from a few lines: never written out whole)."""
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        text = _SHORT.repr(value)
        return text if len(text) <= 80 else text[:80] + "…"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:12]}… ({len(text)} characters)"


def _num(where, name, value):
    # ints are finite (math.isfinite would overflow on one of thousands of digits)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise UserError(f"{where}: {name} must be a finite number, got {shown(value)}")


def check_positive(where: str, **values) -> None:
    for name, v in values.items():
        _num(where, name, v)
        if v <= 0:
            raise UserError(f"{where}: {name} must be > 0, got {shown(v)}")


def check_nonnegative(where: str, **values) -> None:
    for name, v in values.items():
        _num(where, name, v)
        if v < 0:
            raise UserError(f"{where}: {name} must be >= 0, got {shown(v)}")


def check_open_unit(where: str, **values) -> None:
    for name, v in values.items():
        _num(where, name, v)
        if not 0 < v < 1:
            raise UserError(f"{where}: {name} must be in (0, 1), got {shown(v)}")


def check_choice(where: str, name: str, value, allowed) -> None:
    if value not in allowed:
        raise UserError(f"{where}: {name} must be one of {', '.join(map(str, allowed))}, got {shown(value)}")


def check_at_most(where: str, limit, **values) -> None:
    for name, v in values.items():
        _num(where, name, v)
        if v > limit:
            raise UserError(f"{where}: {name} must be at most {limit:,}, got {shown(v)}")


def check_at_least(where: str, limit, **values) -> None:
    for name, v in values.items():
        _num(where, name, v)
        if v < limit:
            raise UserError(f"{where}: {name} must be at least {limit:g}, got {shown(v)}")
