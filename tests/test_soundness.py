"""Soundness of the certificate on a model with an exact answer (spec, Decisions).

A(theta) = g(w . theta), g increasing: A(theta_hat + eps) = g(w . theta_hat + sigma ||w|| Z), so the sup
of h_q over the eta-ball is g(w . theta_hat + sigma ||w|| Phi^-1(q_bar)) exactly (and the inf uses
q_under). Many seeded certifications must miss that value at most alpha of the time; a deliberately
wrong bound (k_bar - 5) must be caught by the same test.
"""

import pytest
from scipy.stats import binomtest

from certify.certificate.soundness import simulate_failure_rate

LEVEL = 1e-3  # one-sided binomial test level: a sound certificate fails this test ~0.1 % of the time per case

# (n, q, alpha, eta/sigma, sims): the reference defaults, a median, and small-N settings
SETTINGS = [
    (1000, 0.9, 0.01, 0.5, 10000),
    (1000, 0.5, 0.01, 0.4, 10000),
    (200, 0.5, 0.05, 0.1, 20000),
    (100, 0.7, 0.05, 1.0, 20000),
    (50, 0.5, 0.1, 0.0, 20000),
    (200, 0.9, 0.01 / 6, 0.25, 20000),  # a Bonferroni-sized alpha
]


@pytest.mark.parametrize("side", ["upper", "lower"])
@pytest.mark.parametrize("n, q, alpha, r, sims", SETTINGS)
def test_certificate_fails_at_most_alpha(n, q, alpha, r, sims, side):
    res = simulate_failure_rate(n, q, alpha, r, sims=sims, seed=20240 + n, side=side)
    # Soundness: the failure count is not significantly above alpha.
    p_above = binomtest(res["failures"], sims, alpha, alternative="greater").pvalue
    assert p_above > LEVEL, res
    # The rule's exact failure probability P[Bin(n, q') >= k] is <= alpha by construction ...
    assert res["exact"] <= alpha
    # ... and the simulation reproduces it (so the test above has power and the simulation is right).
    p_exact = binomtest(res["failures"], sims, res["exact"]).pvalue
    assert p_exact > LEVEL, res


def test_wrong_bound_is_caught():
    # k_bar - 5 at N = 1000, q = 0.5, eta/sigma = 0.4 has exact failure probability ~0.022 > alpha = 0.01.
    n, q, alpha, r, sims = 1000, 0.5, 0.01, 0.4, 20000
    good = simulate_failure_rate(n, q, alpha, r, sims=sims, seed=7)
    bad = simulate_failure_rate(n, q, alpha, r, sims=sims, seed=7, k_shift=-5)
    assert bad["k"] == good["k"] - 5
    assert bad["exact"] > 2 * alpha
    assert binomtest(good["failures"], sims, alpha, alternative="greater").pvalue > LEVEL
    p_bad = binomtest(bad["failures"], sims, alpha, alternative="greater").pvalue
    assert p_bad < LEVEL, bad
    assert bad["rate"] > 2 * alpha
