"""Reading a certified curve (report.json's `certificate.curve`: points with `eta_over_sigma`): the
one lookup the report, the comparison table, the verdict, the plan and the gate share."""
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
