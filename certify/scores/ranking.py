"""Rank correlation across the poisons of a run (the MI-UE paper's analysis), as pure functions.

Spearman's rho and its p-value come from scipy.stats.spearmanr, whose p-value uses a t approximation
that is poor for a handful of points (with 3 points and rho = 1 it says p = 0). Up to EXACT_MAX
points we also give the exact two-sided permutation p-value: the share of all n! pairings of the two
rank vectors whose |rho| is at least the observed one (ties keep their average ranks).
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import rankdata, spearmanr

MIN_POINTS = 3  # fewer points have no rank correlation worth quoting
EXACT_MAX = 8  # 8! = 40,320 pairings; beyond, only scipy's approximation


def exact_p(x, y) -> float:
    """Two-sided exact permutation p-value of Spearman's rho over all n! pairings."""
    rx, ry = rankdata(x), rankdata(y)
    rx = rx - rx.mean()
    perms = ry[np.array(list(itertools.permutations(range(len(ry)))))]
    perms = perms - perms.mean(axis=1, keepdims=True)
    rho = perms @ rx / (np.linalg.norm(perms, axis=1) * np.linalg.norm(rx))
    observed = abs(rho[0])  # the first permutation is the identity
    return float(np.mean(np.abs(rho) >= observed - 1e-12))


def spearman(x, y, names=None) -> dict:
    """{rho, p, p_exact, n, poisons, reason}: rho and p from scipy.stats.spearmanr; null with the
    reason when there are fewer than MIN_POINTS points or either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} vs {len(y)} values")
    n = len(x)
    out = {"rho": None, "p": None, "p_exact": None, "n": n, "poisons": list(names) if names is not None else None,
           "reason": None}
    if n < MIN_POINTS:
        return {**out, "reason": f"needs {MIN_POINTS} poisons"}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, "reason": "constant values: no ranking"}
    r = spearmanr(x, y)
    out.update(rho=float(r.statistic), p=float(r.pvalue))
    if n <= EXACT_MAX:
        out["p_exact"] = exact_p(x, y)
    return out
