"""How the report writes numbers: the shared cell formats of `content` and `literature` (and the
plan's pages), so neither imports the other's helpers."""
from __future__ import annotations

DASH = "—"  # a value that is absent


def acc(x) -> str | None:
    return None if x is None else f"{x:.3f}"


def num(x, digits: int = 4) -> str:
    return DASH if x is None else f"{x:.{digits}g}"


def signed(x) -> str:
    return f"{x:+.3f}"


def ratio(x, of) -> str:
    """x as a fraction of `of` (an accuracy of a reference accuracy), a dash where either is absent."""
    return DASH if x is None or not of else f"{x / of:.3f}"
