"""Unit tests for certify.certificate.bounds: feasibility vectors, brute-force order statistics, scipy
cross-checks (and the report's Clopper-Pearson interval, certify.intervals)."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from certify.certificate import bounds
from certify.errors import UserError
from certify.intervals import binomial_interval

ALPHA = 0.01


# ----------------------------------------------------------------------------- spec feasibility vectors

@pytest.mark.parametrize(
    "n, sigma, q, eta, qbar_expected, k_expected",
    [
        (1000, 0.25, 0.9, 0.3, 0.993, 1000),
        (1000, 0.25, 0.5, 0.1, 0.655, 691),
        (1000, 0.25, 0.5, 0.2, 0.788, 819),
        (1000, 0.25, 0.7, 0.05, 0.766, 797),
        (1000, 1.0, 0.9, 1.0, None, 997),
    ],
)
def test_spec_feasibility_vectors(n, sigma, q, eta, qbar_expected, k_expected):
    qb = bounds.q_bar(q, eta, sigma)
    if qbar_expected is not None:
        assert qb == pytest.approx(qbar_expected, abs=6e-4)
    assert bounds.k_upper(n, qb, ALPHA) == k_expected


def test_spec_vector_abstains():
    qb = bounds.q_bar(0.9, 0.5, 0.25)
    assert bounds.k_upper(1000, qb, ALPHA) is None


def test_spec_largest_certifiable_eta_over_sigma():
    # Decisions: "with N = 1000 and q = 0.9 the largest eta/sigma that can be certified is about 1.32"
    eta = bounds.max_certified_eta(1000, 0.25, 0.9, ALPHA)
    assert eta / 0.25 == pytest.approx(1.32, abs=0.01)


def test_q_bar_q_under_basic():
    assert bounds.q_bar(0.7, 0.0, 0.3) == pytest.approx(0.7)
    assert bounds.q_under(0.7, 0.0, 0.3) == pytest.approx(0.7)
    # symmetric around q = 0.5
    assert bounds.q_bar(0.5, 0.1, 0.25) == pytest.approx(1 - bounds.q_under(0.5, 0.1, 0.25))
    assert bounds.q_under(0.9, 0.2, 0.25) < 0.9 < bounds.q_bar(0.9, 0.2, 0.25)


# ----------------------------------------------------------------------------- brute force

def _k_upper_brute(n, p, alpha):
    for k in range(1, n + 1):
        if stats.binom.cdf(k - 1, n, p) >= 1 - alpha:
            return k
    return None


def _k_lower_brute(n, p, alpha):
    for k in range(n, 0, -1):
        if stats.binom.cdf(k - 1, n, p) <= alpha:
            return k
    return None


def test_k_upper_k_lower_match_brute_force():
    rng = np.random.default_rng(1234)
    seen_none_upper = seen_none_lower = 0
    for _ in range(80):
        n = int(rng.integers(1, 300))
        p = float(rng.uniform(0.0, 1.0)) if rng.uniform() < 0.8 else float(rng.uniform(0.95, 1.0))
        alpha = float(rng.choice([0.001, 0.01, 0.05, 0.2]))
        ku, kl = bounds.k_upper(n, p, alpha), bounds.k_lower(n, p, alpha)
        assert ku == _k_upper_brute(n, p, alpha), (n, p, alpha)
        assert kl == _k_lower_brute(n, p, alpha), (n, p, alpha)
        assert ku is None or isinstance(ku, int)
        assert kl is None or isinstance(kl, int)
        seen_none_upper += ku is None
        seen_none_lower += kl is None
    assert seen_none_upper > 0 and seen_none_lower > 0  # both abstention branches were exercised


def test_k_bounds_bracket_the_quantile():
    # a lower order statistic never exceeds the upper one for the same level
    for n in (20, 100, 1000):
        for p in (0.1, 0.5, 0.9):
            ku, kl = bounds.k_upper(n, p, 0.05), bounds.k_lower(n, p, 0.05)
            if ku is not None and kl is not None:
                assert kl < ku
                assert kl <= math.ceil(n * p) <= ku


# ----------------------------------------------------------------------------- scipy.stats.quantile_test

def test_upper_and_lower_match_scipy_quantile_test_at_eta_zero():
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(60):
        n = int(rng.integers(20, 600))
        q = float(rng.uniform(0.05, 0.95))
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        draws = rng.uniform(size=n)
        (row,) = bounds.certify_curve(draws, q, alpha, 0.25, [0.0])
        assert row["q_bar"] == pytest.approx(q) and row["q_lower"] == pytest.approx(q)
        res_less = stats.quantile_test(draws, q=0.5, p=q, alternative="less")
        hi = res_less.confidence_interval(confidence_level=1 - alpha).high
        res_greater = stats.quantile_test(draws, q=0.5, p=q, alternative="greater")
        lo = res_greater.confidence_interval(confidence_level=1 - alpha).low
        if np.isnan(hi):
            assert row["learnability"] is None and row["k"] is None
        else:
            assert row["learnability"] == hi
            checked += 1
        if np.isnan(lo):
            assert row["lower"] is None and row["k_lower"] is None
        else:
            assert row["lower"] == lo
    assert checked > 40


# ----------------------------------------------------------------------------- max_certified_eta

@pytest.mark.parametrize(
    "n, sigma, q, alpha",
    [(1000, 0.25, 0.9, 0.01), (1000, 1.0, 0.5, 0.01), (200, 0.02, 0.9, 0.05), (50, 0.1, 0.7, 0.001 / 6),
     (5000, 0.05, 0.99, 0.01)],
)
def test_max_certified_eta_is_the_edge_of_k_upper(n, sigma, q, alpha):
    eta = bounds.max_certified_eta(n, sigma, q, alpha)
    assert eta is not None and eta > 0
    assert bounds.k_upper(n, bounds.q_bar(q, eta, sigma), alpha) == n  # at the edge the top draw is used
    assert bounds.k_upper(n, bounds.q_bar(q, eta * (1 - 1e-6), sigma), alpha) is not None
    assert bounds.k_upper(n, bounds.q_bar(q, eta * (1 + 1e-6), sigma), alpha) is None


def test_max_certified_eta_none_when_even_zero_abstains():
    # q = 0.99 with n = 100, alpha = 0.01: alpha^(1/n) ~ 0.955 < 0.99, so eta = 0 already abstains
    assert bounds.k_upper(100, 0.99, 0.01) is None
    assert bounds.max_certified_eta(100, 0.25, 0.99, 0.01) is None


# ----------------------------------------------------------------------------- certify_curve / summarize

def _draws(n=1000, seed=0):
    return np.random.default_rng(seed).beta(20, 30, size=n)


def test_curve_shape_types_and_monotonicity():
    draws = _draws()
    grid = [0.05, 0.1, 0.25, 0.5, 1.0, 1.5]
    curve = bounds.certify_curve(draws, 0.9, ALPHA, 0.25, grid)
    assert len(curve) == len(grid)
    keys = {"eta", "eta_over_sigma", "q_bar", "k", "learnability", "q_lower", "k_lower", "lower"}
    srt = np.sort(draws)
    for row, r in zip(curve, grid):
        assert set(row) == keys
        assert row["eta_over_sigma"] == r and row["eta"] == pytest.approx(0.25 * r)
        for key in ("eta", "eta_over_sigma", "q_bar", "q_lower"):
            assert type(row[key]) is float
        if row["k"] is not None:
            assert type(row["k"]) is int and type(row["learnability"]) is float
            assert row["learnability"] == srt[row["k"] - 1]
        if row["k_lower"] is not None:
            assert type(row["k_lower"]) is int and type(row["lower"]) is float
            assert row["lower"] == srt[row["k_lower"] - 1]
    # eta/sigma = 1.5 > 1.32 abstains on the upper side, and only the last one does
    assert [row["k"] is None for row in curve] == [False] * 5 + [True]
    assert curve[-1]["learnability"] is None
    ks = [row["k"] for row in curve[:-1]]
    assert ks == sorted(ks)
    kls = [row["k_lower"] for row in curve if row["k_lower"] is not None]
    assert kls == sorted(kls, reverse=True)
    json.dumps(curve)  # plain Python values only


def test_lower_side_abstains():
    # n = 20, q = 0.1, large eta: q_under tiny, (1 - q_under)^20 > alpha -> no k qualifies
    (row,) = bounds.certify_curve(_draws(20), 0.1, 0.01, 0.25, [1.0])
    assert row["k_lower"] is None and row["lower"] is None


def test_bonferroni_uses_smaller_alpha():
    draws = _draws()
    grid = [0.05, 0.1, 0.25, 0.5, 1.0]
    per = bounds.certify_curve(draws, 0.5, ALPHA, 0.25, grid, coverage="per-eta")
    bon = bounds.certify_curve(draws, 0.5, ALPHA, 0.25, grid, coverage="bonferroni")
    for rp, rb in zip(per, bon):
        assert rb["k"] == bounds.k_upper(1000, rb["q_bar"], ALPHA / len(grid))
        assert rb["k_lower"] == bounds.k_lower(1000, rb["q_lower"], ALPHA / len(grid))
        assert rb["k"] > rp["k"] and rb["k_lower"] < rp["k_lower"]
    s_per = bounds.summarize(draws, 0.9, ALPHA, 0.25, grid, "per-eta")
    s_bon = bounds.summarize(draws, 0.9, ALPHA, 0.25, grid, "bonferroni")
    assert s_bon["max_certified_eta"] < s_per["max_certified_eta"]


def test_summarize_fields():
    draws = _draws()
    grid = [0.05, 0.1, 0.25, 0.5, 1.0, 1.5]
    s = bounds.summarize(draws, 0.9, ALPHA, 0.25, grid, "per-eta")
    assert set(s) == {"empirical_quantile", "coverage", "curve", "max_certified_eta", "samples"}
    assert s["samples"] == 1000 and type(s["samples"]) is int
    assert s["coverage"] == "per-eta"
    assert s["empirical_quantile"] == float(np.sort(draws)[899])  # inverted CDF: ceil(0.9 * 1000) = 900th
    assert s["max_certified_eta"] == pytest.approx(0.25 * 1.3234, abs=1e-3)
    assert s["curve"] == bounds.certify_curve(draws, 0.9, ALPHA, 0.25, grid)
    json.loads(json.dumps(s))


def test_empirical_quantile_is_inverted_cdf():
    d = [0.1, 0.2, 0.3, 0.4]
    assert bounds.empirical_quantile(d, 0.5) == 0.2  # F(0.2) = 0.5 >= 0.5; no interpolation
    assert bounds.empirical_quantile(d, 0.51) == 0.3
    assert bounds.empirical_quantile(d, 0.9) == 0.4


def test_clopper_pearson():
    """The project's one exact binomial interval (an accuracy on n test images, certify.intervals;
    statsmodels inside) against scipy's beta quantiles and its exact binomial test."""
    lo, hi = binomial_interval(30 / 100, 100)
    assert lo == pytest.approx(stats.beta.ppf(0.025, 30, 71))
    assert hi == pytest.approx(stats.beta.ppf(0.975, 31, 70))
    assert binomial_interval(0.0, 10)[0] == 0.0
    assert binomial_interval(1.0, 10)[1] == 1.0
    ci = stats.binomtest(30, 100).proportion_ci(confidence_level=0.95, method="exact")
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    ci = stats.binomtest(3, 10).proportion_ci(confidence_level=0.9, method="exact")
    assert binomial_interval(0.3, 10, confidence=0.9) == pytest.approx((ci.low, ci.high))


# ----------------------------------------------------------------------------- validation

GOOD = dict(draws=[0.2, 0.5, 0.7], q=0.9, alpha=0.01, sigma=0.25, eta_over_sigma=[0.1], coverage="per-eta")


@pytest.mark.parametrize(
    "field, value",
    [
        ("draws", []),
        ("draws", [[0.1, 0.2]]),
        ("draws", [0.1, float("nan")]),
        ("draws", [0.1, float("inf")]),
        ("draws", [0.1, 1.2]),
        ("draws", [-0.1, 0.5]),
        ("draws", ["a"]),
        ("q", 0.0),
        ("q", 1.0),
        ("q", float("nan")),
        ("alpha", 0.0),
        ("alpha", 1.0),
        ("alpha", "x"),
        ("sigma", 0.0),
        ("sigma", -1.0),
        ("sigma", float("inf")),
        ("eta_over_sigma", [-0.1]),
        ("eta_over_sigma", [float("nan")]),
        ("eta_over_sigma", [float("inf")]),
        ("eta_over_sigma", []),
        ("coverage", "joint"),
    ],
)
def test_bad_inputs_raise_user_error(field, value):
    kwargs = dict(GOOD, **{field: value})
    for fn in (bounds.certify_curve, bounds.summarize):
        with pytest.raises(UserError) as exc:
            fn(**kwargs)
        msg = str(exc.value)
        assert "\n" not in msg
        assert field in msg


def test_other_functions_validate():
    with pytest.raises(UserError, match="alpha"):
        bounds.k_upper(10, 0.5, 1.5)
    with pytest.raises(UserError, match="n "):
        bounds.k_lower(0, 0.5, 0.1)
    with pytest.raises(UserError, match="q"):
        bounds.empirical_quantile([0.1], 1.0)
    with pytest.raises(UserError, match="sigma"):
        bounds.max_certified_eta(100, 0.0, 0.5, 0.01)
