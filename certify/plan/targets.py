"""What a data owner asks of a budget, and the smallest budget that gives it (pure functions of the
plan's rows, so the rule is tested on rows made up for it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from certify.errors import UserError


@dataclass(frozen=True)
class Targets:
    # the protected model's test accuracy must be at most this
    protected_accuracy_at_most: Union[float, None] = None
    # the certified gap (clean control's certified learnability minus the poison's) must be at least this
    certified_gap_at_least: Union[float, None] = None

    def validate(self) -> None:
        for flag, value in (("--target-accuracy", self.protected_accuracy_at_most),
                            ("--target-gap", self.certified_gap_at_least)):
            if value is not None and not 0 <= value <= 1:  # NaN fails too
                raise UserError(f"{flag} must be in [0, 1] (a fraction of the test set), got {value!r}")

    @property
    def given(self) -> bool:
        return self.protected_accuracy_at_most is not None or self.certified_gap_at_least is not None


def meets(row: dict, targets: Targets) -> bool:
    """Whether a plan row meets every given target; an abstaining certificate (gap None) meets no
    gap target: nothing is certified there. The accuracy target holds for the upper end of the
    protected accuracy's 95 % interval where the row has one (the verdict's conservative reading)."""
    acc, gap = targets.protected_accuracy_at_most, targets.certified_gap_at_least
    upper = (row.get("protected_interval") or [None, row["protected_accuracy"]])[1]
    if acc is not None and not upper <= acc:
        return False
    if gap is not None and (row["certified_gap"] is None or not row["certified_gap"] >= gap):
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
