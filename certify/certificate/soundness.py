"""Soundness check of the certificate on a model whose (q, eta)-learnability is known exactly.

A(theta) = g(w . theta) with g increasing gives A(theta + eps) = g(w . theta + sigma ||w|| Z), so
sup_{||theta' - theta_hat|| <= eta} h_q(theta') = g(w . theta_hat + sigma ||w|| Phi^-1(q_bar)) and the
infimum over the ball is the same with q_under. Simulating many certifications and counting how often
the certified bound misses the true value measures the certificate's failure rate, which must be <= alpha.
numpy / scipy only (no torch), so tests and report scripts can share it.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom, norm

from certify.certificate import bounds


def _g(x: np.ndarray) -> np.ndarray:
    """An increasing 'accuracy' map into [0.1, 0.9] (a scaled logistic)."""
    return 0.1 + 0.8 / (1.0 + np.exp(-x))


def simulate_failure_rate(
    n: int,
    q: float,
    alpha: float,
    eta_over_sigma: float,
    sims: int,
    seed: int,
    sigma: float = 0.25,
    dim: int = 50,
    side: str = "upper",
    k_shift: int = 0,
    chunk: int = 2000,
) -> dict:
    """Run `sims` independent certifications of the linear-logistic model and count failures.

    side="upper": failure = a_(k) < sup over the eta-ball of h_q (the true value);
    side="lower": failure = a_(k) > inf over the eta-ball of h_q.
    k_shift moves the order statistic (e.g. -5 for a deliberately wrong, too-small upper bound;
    clipped to 1..n). Returns the k used, the failure count and rate, and the exact failure
    probability P[Bin(n, q') >= k] (upper) or P[Bin(n, q') <= k - 1] (lower) for comparison.
    """
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim)
    theta_hat = rng.normal(size=dim) / np.sqrt(dim)
    s, tau = float(w @ theta_hat), sigma * float(np.linalg.norm(w))
    eta = eta_over_sigma * sigma
    if side == "upper":
        level = bounds.q_bar(q, eta, sigma)
        k = bounds.k_upper(n, level, alpha)
    elif side == "lower":
        level = bounds.q_under(q, eta, sigma)
        k = bounds.k_lower(n, level, alpha)
    else:
        raise ValueError(f"side must be 'upper' or 'lower', got {side!r}")
    if k is None:
        raise ValueError(f"the certificate abstains for n={n}, q={q}, eta/sigma={eta_over_sigma}, alpha={alpha}")
    k = int(min(max(k + k_shift, 1), n))
    truth = float(_g(np.float64(s + tau * norm.ppf(level))))

    failures = 0
    done = 0
    while done < sims:
        m = min(chunk, sims - done)
        draws = _g(s + tau * rng.standard_normal((m, n)))  # A(theta_hat + eps_j), j = 1..n, m times
        a_k = np.partition(draws, k - 1, axis=1)[:, k - 1]  # the k-th smallest draw (1-based k)
        failures += int(np.count_nonzero(a_k < truth if side == "upper" else a_k > truth))
        done += m

    exact = float(binom.sf(k - 1, n, level) if side == "upper" else binom.cdf(k - 1, n, level))
    return {"n": n, "q": q, "alpha": alpha, "eta_over_sigma": eta_over_sigma, "side": side,
            "k": k, "k_shift": k_shift, "level": level, "sims": sims, "failures": failures,
            "rate": failures / sims, "exact": exact}
