"""Reading a curve of report.json (a certificate's or a recovery attack's: points with
`eta_over_sigma`): the lookups the report, the comparison table, the verdict, the plan and the gate share."""
from __future__ import annotations

import math

REFERENCE_ETA_SIGMA = 0.1  # the point of the curve one-line summaries, the table and the verdict quote


def close(a: float, b: float) -> bool:
    """Two η/σ values are the same grid point (they pass through JSON and arithmetic)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def point_at(curve: list | None, r: float) -> dict | None:
    """The point of `curve` at η/σ = r, or None."""
    return next((pt for pt in curve or [] if close(pt["eta_over_sigma"], r)), None)


def reference_point(curve: list[dict]) -> dict:
    """The point at REFERENCE_ETA_SIGMA, or the first point when the grid lacks it."""
    return point_at(curve, REFERENCE_ETA_SIGMA) or curve[0]


def early_stop(curve: list[dict]) -> dict | None:
    """The point the attacker picks on its own split: the highest `attacker_accuracy` (the first of
    equals, in grid order), as {"index", "eta", "eta_over_sigma", "accuracy" (its test accuracy),
    "attacker_accuracy", "on": "attacker"}; where a point lacks `attacker_accuracy`, the test-set
    peak with "on": "test" (never a choice the attacker could make: the conservative stand-in).
    None for an empty curve."""
    if not curve:
        return None
    on = "attacker" if all(p.get("attacker_accuracy") is not None for p in curve) else "test"
    key = "attacker_accuracy" if on == "attacker" else "accuracy"
    i = max(range(len(curve)), key=lambda j: (curve[j][key], -j))
    pt = curve[i]
    return {"index": i, "eta": pt.get("eta"), "eta_over_sigma": pt["eta_over_sigma"], "accuracy": pt["accuracy"],
            "attacker_accuracy": pt.get("attacker_accuracy"), "on": on}
