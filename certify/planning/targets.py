"""What a data owner asks of a budget, and the smallest budget that gives it (pure functions of the
plan's rows, so the rule is tested on rows made up for it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from certify.errors import UserError


READINGS = ("best-defended", "undefended")  # which accuracy the accuracy target applies to


@dataclass(frozen=True)
class Targets:
    # the attacker's accuracy (see `reading`) must be at most this
    protected_accuracy_at_most: Union[float, None] = None
    # the certified drop (clean control's certified learnability minus the poison's) must be at least this
    certified_drop_at_least: Union[float, None] = None
    # best-defended: the attacker's best over training normally and each defense of the plan (an
    # attacker applies JPEG if it helps); undefended (--target-undefended): training normally only
    reading: str = "best-defended"

    def validate(self) -> None:
        for flag, value in (("--target-accuracy", self.protected_accuracy_at_most),
                            ("--target-drop", self.certified_drop_at_least)):
            if value is not None and not 0 <= value <= 1:  # NaN fails too
                raise UserError(f"{flag} must be in [0, 1] (a fraction of the test set), got {value!r}")
        if self.reading not in READINGS:
            raise UserError(f"targets reading must be one of {', '.join(READINGS)}, got {self.reading!r}")

    @property
    def given(self) -> bool:
        return self.protected_accuracy_at_most is not None or self.certified_drop_at_least is not None


def _upper(value: float, interval: list | None) -> float:
    return (interval or [None, value])[1]


def _tried(row: dict, victim: str | None = None) -> list[tuple[str, float]]:
    """(what, upper end) of one victim's row: trained normally, then under each defense."""
    on = f" ({victim})" if victim else ""
    intervals = row.get("defense_intervals") or {}
    tried = [(f"undefended{on}", _upper(row["protected_accuracy"], row.get("protected_interval")))]
    return tried + [(f"{d}{on}", _upper(a, intervals.get(d))) for d, a in (row.get("defenses") or {}).items()]


def attacker_best(row: dict) -> dict:
    """{"accuracy", "by"}: the highest upper end of a 95 % interval (the value itself where a row has
    none) over the model trained normally ("undefended") and under each defense of the row, on the
    crafting model and on each other victim architecture of the row (`victims`, named in `by`); the
    first of equals, undefended first."""
    tried = _tried(row) + [t for a, v in (row.get("victims") or {}).items() for t in _tried(v, a)]
    by, accuracy = max(tried, key=lambda t: t[1])
    return {"accuracy": accuracy, "by": by}


def meets(row: dict, targets: Targets) -> bool:
    """Whether a plan row meets every given target; an abstaining certificate (drop None) meets no
    drop target: nothing is certified there. The accuracy target holds for the upper end of the
    95 % interval where the row has one (the verdict's conservative reading): of the attacker's best
    over the defenses by default, of the protected accuracy with reading "undefended"."""
    acc, gap = targets.protected_accuracy_at_most, targets.certified_drop_at_least
    upper = (_upper(row["protected_accuracy"], row.get("protected_interval")) if targets.reading == "undefended"
             else attacker_best(row)["accuracy"])
    if acc is not None and not upper <= acc:
        return False
    if gap is not None and (row["certified_drop"] is None or not row["certified_drop"] >= gap):
        return False
    return True


def recommend(rows: list[dict], targets: Targets) -> Union[str, None]:
    """The label of the smallest budget meeting the targets; None when none does or none are given."""
    if not targets.given:
        return None
    for row in sorted(rows, key=lambda r: r["epsilon"]):
        if meets(row, targets):
            return row["budget"]
    return None
