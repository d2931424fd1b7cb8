"""Rank correlation across the poisons of a run (the MI-UE paper's analysis), as pure functions.

Spearman's rho with three measures of how sure it is:
- p: scipy.stats.spearmanr's t approximation, poor for a handful of points (3 points, rho = 1: p = 0);
- p_permutation: the two-sided permutation p (scipy.stats.permutation_test, pairings of the ranks,
  |rho| at least the observed one): exact over all n! pairings while n! <= PERMUTATIONS, otherwise a
  Monte-Carlo estimate from PERMUTATIONS seeded random pairings (scipy counts the observed pairing
  among them, so the estimate is never 0);
- ci: a 95 % bootstrap interval for rho (scipy.stats.bootstrap, paired resamples of the poisons,
  BOOTSTRAP seeded resamples, percentile method: BCa's jackknife breaks on the constant resamples
  that small n produces). A resample whose x or y is constant has no rho; the interval is null, with
  the reason, when more than MAX_DEGENERATE of the resamples are such (too few distinct poisons),
  otherwise those resamples are left out.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import bootstrap, permutation_test, rankdata, spearmanr

MIN_POINTS = 3  # fewer points have no rank correlation worth quoting
PERMUTATIONS = 100_000  # exact while n! <= this (n <= 8), Monte Carlo beyond
BOOTSTRAP = 10_000
CONFIDENCE = 0.95
MAX_DEGENERATE = 0.01  # share of bootstrap resamples without a rho beyond which no interval is given


def rank_rho(x, y, axis: int = -1) -> np.ndarray:
    """Spearman's rho along `axis` (vectorised: the Pearson correlation of average ranks); nan where
    x or y is constant."""
    rx = rankdata(x, axis=axis)
    ry = rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    den = np.sqrt(np.sum(rx * rx, axis=axis) * np.sum(ry * ry, axis=axis))
    num = np.sum(rx * ry, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def permutation_p(x, y, seed: int = 0, resamples: int = PERMUTATIONS) -> tuple[float, str]:
    """(two-sided permutation p of Spearman's rho, "exact" | "monte-carlo")."""
    exact = math.factorial(len(x)) <= resamples
    y = np.asarray(y, float)

    def rho_against_y(xs, axis=-1):  # one sample permuted: n! pairings (two would be permuted both, n!^2)
        return rank_rho(xs, np.broadcast_to(y, np.shape(xs)), axis)

    res = permutation_test((np.asarray(x, float),), rho_against_y, permutation_type="pairings",
                           vectorized=True, n_resamples=np.inf if exact else resamples,
                           alternative="two-sided", rng=np.random.default_rng(seed))
    return float(res.pvalue), "exact" if exact else "monte-carlo"


def bootstrap_ci(x, y, seed: int = 0, resamples: int = BOOTSTRAP) -> tuple[list[float] | None, str | None]:
    """(95 % percentile bootstrap interval of Spearman's rho, or None; the reason when None)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rho = rank_rho(x[None, :], y[None, :])[0]  # the observed statistic; degenerate resamples give nan
    with warnings.catch_warnings():  # scipy warns of the nan resamples, which are handled below
        warnings.simplefilter("ignore")
        res = bootstrap((x, y), rank_rho, paired=True, vectorized=True, n_resamples=resamples,
                        confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution
    bad = float(np.mean(np.isnan(dist)))
    if bad > MAX_DEGENERATE or not np.isfinite(rho):
        return None, f"{bad:.0%} of bootstrap resamples have a constant side (too few poisons)"
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.nanpercentile(dist, [tail, 100 - tail])  # the few degenerate resamples left out
    return [float(lo), float(hi)], None


def spearman(x, y, names=None, seed: int = 0) -> dict:
    """{rho, p, p_permutation, p_method, ci, ci_reason, n, poisons, reason}: rho and p from
    scipy.stats.spearmanr; null with the reason when there are fewer than MIN_POINTS points or either
    side is constant. `seed` seeds the Monte-Carlo permutations and the bootstrap."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} vs {len(y)} values")
    n = len(x)
    out = {"rho": None, "p": None, "p_permutation": None, "p_method": None, "ci": None, "ci_reason": None,
           "confidence": CONFIDENCE, "n": n, "poisons": list(names) if names is not None else None, "reason": None}
    if n < MIN_POINTS:
        return {**out, "reason": f"needs {MIN_POINTS} poisons"}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, "reason": "constant values: no ranking"}
    r = spearmanr(x, y)
    p_perm, method = permutation_p(x, y, seed)
    ci, ci_reason = bootstrap_ci(x, y, seed)
    out.update(rho=float(r.statistic), p=float(r.pvalue), p_permutation=p_perm, p_method=method, ci=ci,
               ci_reason=ci_reason)
    return out
