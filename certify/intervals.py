"""95 % intervals on accuracies: arrays in, numbers out (no torch).

One seed's test accuracy is a proportion over the test images, so its interval is the exact
binomial (Clopper-Pearson) one: it covers the sampling of the test set, not the spread between
training runs. Over K >= 2 seeds the per-seed accuracies are the sample and the interval is
Student's t on their mean: it covers the spread between training runs (crafting, initialisation,
batch order) on this fixed test set, which every replicate shares.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95
CLOPPER_PEARSON, STUDENT_T = "clopper-pearson", "student-t"


def binomial_interval(accuracy: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper-Pearson interval of an accuracy measured on `n` images (count = accuracy × n)."""
    count = round(accuracy * n)
    low, high = proportion_confint(count, n, alpha=1 - confidence, method="beta")
    # the bounds are of count / n; the mean itself must lie inside even where accuracy × n is off-grid
    return min(float(low), accuracy), max(float(high), accuracy)


def replicate_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student's t interval of the mean of K >= 2 per-seed accuracies, clipped to [0, 1]."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        raise ValueError("a replicate interval needs at least two values")
    mean = float(v.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return max(0.0, mean - half), min(1.0, mean + half)


def method(k: int) -> str:
    """The interval used for K per-seed values."""
    return CLOPPER_PEARSON if k == 1 else STUDENT_T


def summarize(values, n_test: int, confidence: float = CONFIDENCE) -> dict:
    """{"mean", "interval", "method"} of per-seed accuracies (one value: the binomial interval)."""
    v = [float(x) for x in values]
    if len(v) == 1:
        return {"mean": v[0], "interval": list(binomial_interval(v[0], n_test, confidence)), "method": method(1)}
    return {"mean": float(np.mean(v)), "interval": list(replicate_interval(v, confidence)), "method": method(len(v))}
