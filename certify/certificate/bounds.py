"""Pure statistics of the Monte-Carlo (q, eta)-learnability certificate.

Percentile smoothing (Chiang et al. 2020, Thm. 1) moved to parameter space: for every theta' within
eta of theta_hat, h_q(theta') <= h_{q_bar}(theta_hat) with q_bar = Phi(Phi^-1(q) + eta/sigma), and an
order statistic of N smoothed-accuracy draws bounds h_{q_bar}(theta_hat) with probability >= 1 - alpha.
What the claim covers: the README's "What a certificate says"; its failure rate is simulated by
`soundness.py`. numpy and scipy only: this module never imports torch.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import binom, norm

from certify.errors import UserError

COVERAGES = ("per-eta", "bonferroni")


# ----------------------------------------------------------------------------- validation helpers

def _check_open_unit(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not (0.0 < v < 1.0):
        raise UserError(f"{name} must be in the open interval (0, 1), got {value!r}")
    return v


def _check_sigma(sigma: float) -> float:
    try:
        v = float(sigma)
    except (TypeError, ValueError):
        raise UserError(f"sigma must be a positive number, got {sigma!r}") from None
    if not (math.isfinite(v) and v > 0.0):
        raise UserError(f"sigma must be a finite number > 0, got {sigma!r}")
    return v


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise UserError(f"n (number of draws) must be an integer >= 1, got {n!r}")
    return int(n)


def _check_prob(name: str, value: float) -> float:
    """A binomial success probability: closed [0, 1] (q_bar may round to exactly 0 or 1)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not (0.0 <= v <= 1.0):
        raise UserError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _check_draws(draws: Any) -> np.ndarray:
    try:
        a = np.asarray(draws, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError("draws must be a 1-D sequence of accuracies in [0, 1]") from None
    if a.ndim != 1 or a.size == 0:
        raise UserError(f"draws must be a non-empty 1-D sequence, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise UserError("draws must be finite (found NaN or inf)")
    if a.min() < 0.0 or a.max() > 1.0:
        raise UserError(f"draws must lie in [0, 1], got range [{a.min()}, {a.max()}]")
    return a


def _check_grid(eta_over_sigma: Any) -> np.ndarray:
    try:
        g = np.atleast_1d(np.asarray(eta_over_sigma, dtype=np.float64))
    except (TypeError, ValueError):
        raise UserError("eta_over_sigma must be a list of non-negative numbers") from None
    if g.ndim != 1 or g.size == 0:
        raise UserError("eta_over_sigma must be a non-empty 1-D list of non-negative numbers")
    if not np.all(np.isfinite(g)) or np.any(g < 0):
        raise UserError(f"eta_over_sigma values must be finite and >= 0, got {g.tolist()}")
    return g


def _check_coverage(coverage: str) -> str:
    if coverage not in COVERAGES:
        raise UserError(f"coverage must be one of {', '.join(COVERAGES)}, got {coverage!r}")
    return coverage


# ----------------------------------------------------------------------------- the bounds

def q_bar(q: float, eta: float, sigma: float) -> float:
    """Quantile level at theta_hat that dominates h_q anywhere in the eta-ball: Phi(Phi^-1(q) + eta/sigma)."""
    return float(norm.cdf(norm.ppf(q) + eta / sigma))


def q_under(q: float, eta: float, sigma: float) -> float:
    """Quantile level at theta_hat dominated by h_q anywhere in the eta-ball: Phi(Phi^-1(q) - eta/sigma)."""
    return float(norm.cdf(norm.ppf(q) - eta / sigma))


def k_upper(n: int, qbar: float, alpha: float) -> int | None:
    """Smallest 1-based k with BinomCDF(k-1; n, qbar) >= 1 - alpha, or None (abstain).

    Why: P[a_(k) < h_qbar] <= P[Bin(n, qbar) >= k] = 1 - BinomCDF(k-1), so a_(k) is an upper bound on
    h_qbar with probability >= 1 - alpha; the smallest such k is the tightest.
    """
    n = _check_n(n)
    qbar = _check_prob("qbar", qbar)
    alpha = _check_open_unit("alpha", alpha)
    ks = np.arange(1, n + 1)
    ok = binom.cdf(ks - 1, n, qbar) >= 1.0 - alpha
    if not ok.any():
        return None
    return int(ks[np.argmax(ok)])  # the CDF is non-decreasing in k: first True is the minimum


def k_lower(n: int, qlow: float, alpha: float) -> int | None:
    """Largest 1-based k with BinomCDF(k-1; n, qlow) <= alpha, or None (abstain).

    Why: P[a_(k) > h_qlow] <= P[Bin(n, qlow) <= k-1], so a_(k) is a lower bound on h_qlow with
    probability >= 1 - alpha; the largest such k is the tightest.
    """
    n = _check_n(n)
    qlow = _check_prob("qlow", qlow)
    alpha = _check_open_unit("alpha", alpha)
    ks = np.arange(1, n + 1)
    ok = binom.cdf(ks - 1, n, qlow) <= alpha
    if not ok.any():
        return None
    return int(ks[n - 1 - np.argmax(ok[::-1])])  # non-decreasing CDF: last True is the maximum


def empirical_quantile(draws: Sequence[float] | np.ndarray, q: float) -> float:
    """Uncertified q-quantile inf{y : F_N(y) >= q} (inverted CDF, no interpolation, as the spec decides)."""
    a = _check_draws(draws)
    q = _check_open_unit("q", q)
    return float(np.quantile(a, q, method="inverted_cdf"))


def certify_curve(
    draws: Sequence[float] | np.ndarray,
    q: float,
    alpha: float,
    sigma: float,
    eta_over_sigma: Sequence[float],
    coverage: str = "per-eta",
) -> list[dict]:
    """Certified upper (and lower) learnability for each eta = (eta/sigma) * sigma.

    Each entry holds with probability >= 1 - alpha on its own ("per-eta"); "bonferroni" uses
    alpha / len(grid) so that the whole curve holds jointly with probability >= 1 - alpha.
    An abstaining side reports k / value as None, never 0 or 1.
    """
    a = np.sort(_check_draws(draws))
    q = _check_open_unit("q", q)
    alpha = _check_open_unit("alpha", alpha)
    sigma = _check_sigma(sigma)
    grid = _check_grid(eta_over_sigma)
    coverage = _check_coverage(coverage)
    a_eff = alpha / grid.size if coverage == "bonferroni" else alpha
    n = int(a.size)

    curve = []
    for r in grid:
        eta = float(r) * sigma
        qb = q_bar(q, eta, sigma)
        ql = q_under(q, eta, sigma)
        ku = k_upper(n, qb, a_eff)
        kl = k_lower(n, ql, a_eff)
        curve.append({
            "eta": float(eta),
            "eta_over_sigma": float(r),
            "q_bar": float(qb),
            "k": ku,
            "learnability": None if ku is None else float(a[ku - 1]),
            "q_lower": float(ql),
            "k_lower": kl,
            "lower": None if kl is None else float(a[kl - 1]),
        })
    return curve


def max_certified_eta(n: int, sigma: float, q: float, alpha: float) -> float | None:
    """Largest eta whose upper bound does not abstain, or None if even eta = 0 abstains.

    Why closed form: k_upper exists iff BinomCDF(n-1; n, qbar) = 1 - qbar^n >= 1 - alpha, i.e.
    qbar <= alpha^(1/n); so eta* = sigma * (Phi^-1(alpha^(1/n)) - Phi^-1(q)).
    """
    n = _check_n(n)
    sigma = _check_sigma(sigma)
    q = _check_open_unit("q", q)
    alpha = _check_open_unit("alpha", alpha)
    q_star = alpha ** (1.0 / n)
    eta = sigma * (float(norm.ppf(q_star)) - float(norm.ppf(q)))
    if eta < 0.0:
        return None

    def certifies(e: float) -> bool:
        return bool(binom.cdf(n - 1, n, q_bar(q, e, sigma)) >= 1.0 - alpha)

    # Floating-point rounding can put the closed form a few ulps past the edge; step back onto it.
    for _ in range(64):
        if certifies(eta):
            return float(eta)
        eta = float(np.nextafter(eta, -np.inf)) if eta > 0 else eta
        if eta <= 0.0:
            break
    # Still not certifying after tiny steps: shrink relatively (should not happen in practice).
    while eta > 0.0 and not certifies(eta):
        eta *= 1.0 - 1e-9
    return float(eta) if certifies(eta) else None


def summarize(
    draws: Sequence[float] | np.ndarray,
    q: float,
    alpha: float,
    sigma: float,
    eta_over_sigma: Sequence[float],
    coverage: str = "per-eta",
) -> dict:
    """The pure-statistics fields of a report's `certificate` section (JSON-serialisable)."""
    a = _check_draws(draws)
    q = _check_open_unit("q", q)
    alpha = _check_open_unit("alpha", alpha)
    sigma = _check_sigma(sigma)
    grid = _check_grid(eta_over_sigma)
    coverage = _check_coverage(coverage)
    # The largest certified eta must agree with the curve's abstentions, so it uses the same alpha.
    a_eff = alpha / grid.size if coverage == "bonferroni" else alpha
    return {
        "empirical_quantile": empirical_quantile(a, q),
        "coverage": coverage,
        "curve": certify_curve(a, q, alpha, sigma, grid, coverage),
        "max_certified_eta": max_certified_eta(int(a.size), sigma, q, a_eff),
        "samples": int(a.size),
    }
