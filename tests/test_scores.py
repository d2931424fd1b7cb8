import math

import numpy as np
import pytest
import torch
from torch import nn

from certify.errors import UserError
from certify.scores.mutual_info import MIConfig, hist_1d, ksg_1d, mi_section, sliced_mi
from certify.scores.sal_ud import (SalConfig, beta, layer_names, lp, sal_epoch, sal_matrix, two_means_1d,
                                   ud_section)


class DeadLayerNet(nn.Module):
    """fc1 feeds a ReLU that is always off (bias -100), so perturbing fc1 cannot change the loss."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc1 = nn.Linear(6, 5)
        self.head = nn.Linear(5 + 6, 3)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(5, 6, generator=g) * 0.1)
            self.fc1.bias.fill_(-100.0)
            self.head.weight.copy_(torch.randn(3, 11, generator=g))
            self.head.bias.zero_()

    def features(self, x):
        return torch.cat([torch.relu(self.fc1(x)), x], 1)

    def forward(self, x):
        return self.head(self.features(x))


def _toy_data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


@pytest.mark.parametrize("method", ["quick", "reference"])
def test_sal_zero_where_flat_positive_where_not(method):
    model = DeadLayerNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _toy_data()
    assert layer_names(model) == ["fc1.weight", "head.weight"]
    cfg = SalConfig(subset=0, batch=64, method=method)
    sal = sal_epoch(model, x, y, cfg, seed=0)
    assert sal[0] < 1e-9  # the dead layer: flat loss
    assert sal[1] > 1e-3  # the head: the loss moves within the 5 % ball
    # the weights are untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_sal_grows_with_rho_and_matrix_shape():
    model = DeadLayerNet()
    x, y = _toy_data()
    small = sal_epoch(model, x, y, SalConfig(rho=0.01, subset=0), 0)[1]
    large = sal_epoch(model, x, y, SalConfig(rho=0.1, subset=0), 0)[1]
    assert large > small > 0
    ckpts = [model.state_dict()] * 4
    m = sal_matrix(model, ckpts, x, y, SalConfig(subset=100, every=2), 0)
    assert len(m) == 2 and all(len(r) == 2 for r in m)  # layers x epochs (2, 4)


def test_two_means_and_beta_known_vector():
    c1, c2 = two_means_1d([0.1, 0.2, 0.3, 5.0, 6.0])
    assert c1 == pytest.approx(0.2) and c2 == pytest.approx(5.5)
    # two epochs (columns): midpoints 2.85 and (1 + 10) / 2 = 5.5
    sal = [[0.1, 1.0], [0.2, 1.0], [0.3, 10.0], [5.0, 10.0], [6.0, 10.0]]
    assert beta(sal) == pytest.approx((2.85 + 5.5) / 2)
    b = beta(sal)
    assert lp(sal, b) == pytest.approx((2 + 3) / 2)


def test_ud_one_against_itself_and_null_when_no_clean_layer():
    sal = [[3.0, 2.0, 1.0], [0.1, 0.2, 0.1], [0.2, 0.1, 0.3], [4.0, 5.0, 2.0]]
    sec = ud_section(sal, sal, SalConfig(), "quick")
    assert sec["ud"] == 1.0 and sec["ud_null_reason"] is None
    assert sec["layers"] == 4 and sec["lp_clean"] == sec["lp_protected"] > 0
    assert sec["base_loss"] == "fresh eval-mode" and sec["sal_clean"] == sal
    flat = [[1.0, 1.0], [1.0, 1.0]]  # all layers equal: nobody above beta
    sec = ud_section(flat, sal[:2], SalConfig(), "quick")
    assert sec["ud"] is None and "#LP(clean) = 0" in sec["ud_null_reason"]


@pytest.mark.parametrize("rho", [0.5, 0.8, 0.9])
def test_ksg_matches_gaussian_mi(rho):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(2000)
    b = rho * a + math.sqrt(1 - rho ** 2) * rng.standard_normal(2000)
    assert ksg_1d(a, b, 3) == pytest.approx(-0.5 * math.log(1 - rho ** 2), abs=0.05)


def test_histogram_direction_and_independence():
    rng = np.random.default_rng(2)
    a = rng.standard_normal(2000)
    e = rng.standard_normal(2000)
    vals = [hist_1d(a, r * a + math.sqrt(1 - r ** 2) * e) for r in (0.0, 0.5, 0.8, 0.9)]
    assert vals == sorted(vals) and vals[-1] - vals[0] > 0.4


def test_sliced_mi_independent_near_zero_and_deterministic():
    g = torch.Generator().manual_seed(0)
    fx, fy = torch.randn(1000, 16, generator=g), torch.randn(1000, 24, generator=g)
    si = sliced_mi(fx, fy, projections=32, seed=5)
    assert abs(si) < 0.05
    assert sliced_mi(fx, fy, projections=32, seed=5) == si
    assert sliced_mi(fx, fy, projections=32, seed=6) != si
    # dependent features score higher (2-D, so random directions are far from orthogonal)
    assert sliced_mi(fx[:, :2], fx[:, :2], projections=32, seed=5) > si + 0.1


def test_mi_section_none_gap_zero():
    model = DeadLayerNet()
    x, y = _toy_data(300)
    sec = mi_section(model, model, x, x, y, MIConfig(projections=8, images=200), seed=0)
    assert sec["gap"] == 0.0 and sec["histogram_gap"] == 0.0
    assert sec["images"] == 200 and sec["estimator"] == "ksg" and sec["clean"] > 0
    assert sec["images_from"] == "training"


def test_paired_features_read_the_released_images_with_the_protected_model():
    from certify.scores.mutual_info import features, paired_features

    clean, protected = DeadLayerNet(), DeadLayerNet()
    with torch.no_grad():
        protected.fc1.bias.zero_()  # a different model: its ReLU units are alive
    x, y = _toy_data(300)
    released = x + 0.5 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(3)))
    cfg = MIConfig(projections=8, images=60)
    fc, fp, labels = paired_features(clean, protected, x, released, y, cfg, seed=0)
    # the same stratified indices for both models (found from the clean features, which hold x itself):
    # the clean model sees x, the protected one the release
    match = [int(torch.nonzero((features(clean, x) == row).all(1))[0]) for row in fc]
    assert torch.equal(labels, y[match]) and len(set(match)) == 60
    assert torch.equal(fp, features(protected, released[match]))
    # the gap depends on the release: the protected model's features of x itself are not what is measured
    on_release = mi_section(clean, protected, x, released, y, cfg, seed=0)["gap"]
    on_clean = mi_section(clean, protected, x, x, y, cfg, seed=0)["gap"]
    assert on_release != on_clean
    with pytest.raises(ValueError, match="released"):
        paired_features(clean, protected, x, released[:10], y, cfg, seed=0)


@pytest.mark.parametrize("cfg,field", [(SalConfig(rho=0), "sal.rho"), (SalConfig(method="full"), "sal.method"),
                                       (SalConfig(steps=2.5), "sal.steps"), (SalConfig(subset=-1), "sal.subset"),
                                       (MIConfig(k=0), "mi.k"), (MIConfig(estimator="kde"), "mi.estimator"),
                                       (MIConfig(bins=1), "mi.bins")])
def test_bad_config(cfg, field):
    with pytest.raises(UserError, match=field):
        cfg.validate("scores")


# ----------------------------------------------------------------------------- covariance score

def test_class_spread_known_values_and_numpy_covariance():
    from certify.scores.covariance import class_spread

    # class 0: two orthogonal unit vectors, centre (0.5, 0.5): trace = 2 * 0.25 = 0.5 (= 1 - |centre|^2);
    # class 1: one direction at two scales (3x and 0.5x): normalised they coincide, trace 0
    z = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0], [0.5, 0.5]])
    y = np.array([0, 0, 1, 1])
    assert class_spread(z, y) == pytest.approx((0.5 + 0.0) / 2)
    # against numpy's population covariance of the normalised rows, class by class
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((300, 16)) + 2.0, rng.integers(0, 4, 300)
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    expected = np.mean([np.trace(np.cov(u[y == k].T, bias=True)) for k in range(4)])
    assert class_spread(z, y) == pytest.approx(expected, rel=1e-12)
    assert class_spread(7.5 * z, y) == pytest.approx(expected, rel=1e-12)  # scale-free
    # a zero row stays zero; a one-image class is left out
    assert class_spread(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array([0, 0, 1])) == pytest.approx(0.25)


def test_covariance_section_ratio_and_null_reason():
    from certify.scores.covariance import covariance_section

    y = np.array([0, 0, 1, 1])
    tight = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    loose = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    sec = covariance_section(tight, loose, y)
    assert sec["score"] == pytest.approx(sec["protected"] / sec["clean"]) and sec["score"] > 1
    assert sec["protected"] == pytest.approx(0.5) and sec["images"] == 4 and sec["score_null_reason"] is None
    assert covariance_section(loose, loose, y)["score"] == 1.0  # the control against itself
    collapsed = np.array([[1.0, 1.0]] * 4)
    sec = covariance_section(collapsed, loose, y)
    assert sec["score"] is None and "spread 0" in sec["score_null_reason"]


def test_total_spread_and_within_total_tell_collapse_from_tight_classes():
    from certify.scores.covariance import covariance_section, total_spread

    # unit vectors: total = 1 - |mean|^2; two opposite directions have mean 0, total 1
    assert total_spread(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(1.0)
    assert total_spread(np.array([[2.0, 0.0], [0.0, 3.0]])) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    centres = np.eye(8)[:4] * 3.0
    clean = centres[y] + rng.standard_normal((200, 8))
    # a global collapse: every feature pulled toward one direction, class structure kept in proportion
    collapsed = 0.2 * clean + np.r_[10.0, np.zeros(7)]
    # tight classes: the same centres, less noise around them
    tight = centres[y] + 0.2 * rng.standard_normal((200, 8))
    col, tig = covariance_section(clean, collapsed, y), covariance_section(clean, tight, y)
    assert col["score"] < 0.2 and tig["score"] < 0.2  # the score alone cannot tell them apart
    assert col["total_score"] < 0.2 < 0.8 < tig["total_score"]
    assert col["within_total_protected"] > 0.9 * col["within_total_clean"]  # no tighter relative to the whole
    assert tig["within_total_protected"] < 0.2 * tig["within_total_clean"]
    assert tig["within_total_protected"] == pytest.approx(tig["protected"] / tig["total_protected"])
    assert tig["images_from"] == "training"
    ctl = covariance_section(clean, clean, y)
    assert ctl["score"] == ctl["total_score"] == 1.0 and ctl["within_total_clean"] == ctl["within_total_protected"]


# ----------------------------------------------------------------------------- rank correlation

def _perm_scipy(x, y, **kw):
    """scipy's documented permutation test of Spearman's rho: x permuted, y fixed."""
    from scipy import stats

    return stats.permutation_test((x,), lambda a: stats.spearmanr(a, y).statistic,
                                  permutation_type="pairings", **kw).pvalue


def test_rank_rho_matches_scipy_with_ties_and_batches():
    from scipy import stats

    from certify.scores.ranking import rank_rho

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (6, 9)).astype(float), rng.standard_normal((6, 9))
    got = rank_rho(x, y)
    assert got == pytest.approx([stats.spearmanr(a, b).statistic for a, b in zip(x, y)], rel=1e-12)
    assert np.isnan(rank_rho(np.ones(5), np.arange(5.0)))


def test_spearman_matches_scipy_and_exact_permutation_p():
    from scipy import stats

    from certify.scores.ranking import permutation_p, spearman

    x, y = [0.1, 0.4, 0.2, 0.9, 0.5], [0.05, 0.3, 0.35, 0.6, 0.2]
    c = spearman(x, y, names="abcde")
    ref = stats.spearmanr(x, y)
    assert c["rho"] == pytest.approx(ref.statistic) and c["p"] == pytest.approx(ref.pvalue)
    assert c["p_permutation"] == pytest.approx(_perm_scipy(x, y, n_resamples=np.inf)) and c["p_method"] == "exact"
    assert c["n"] == 5 and c["poisons"] == list("abcde")
    # three points in the same order: scipy's approximation says p = 0, the exact p is 2 / 3! = 1/3
    assert spearman([1, 2, 3], [2, 5, 9])["p_permutation"] == pytest.approx(1 / 3)
    ties = ([1, 2, 2, 3], [4, 3, 3, 1])
    assert permutation_p(*ties) == (pytest.approx(_perm_scipy(*ties, n_resamples=np.inf)), "exact")


def test_permutation_p_monte_carlo_beyond_the_exact_count_is_seeded_and_near_exact():
    from scipy import stats

    from certify.scores.ranking import PERMUTATIONS, permutation_p

    assert permutation_p(np.arange(9.0), np.arange(9.0) ** 2)[1] == "monte-carlo"  # 9! > PERMUTATIONS
    assert permutation_p(np.arange(8.0), np.arange(8.0) ** 2)[1] == "exact" and PERMUTATIONS >= 40_320
    rng = np.random.default_rng(4)
    x = rng.standard_normal(7)
    y = x + 1.5 * rng.standard_normal(7)
    p, method = permutation_p(x, y, seed=1, resamples=2000)  # 2,000 random pairings of 7! = 5,040
    assert method == "monte-carlo" and permutation_p(x, y, seed=1, resamples=2000)[0] == p
    assert permutation_p(x, y, seed=2, resamples=2000)[0] != p
    exact = _perm_scipy(x, y, n_resamples=np.inf)
    assert abs(p - exact) < 4 * np.sqrt(exact * (1 - exact) / 2000)


def test_bootstrap_interval_is_scipys_percentile_interval():
    from scipy import stats

    from certify.scores.ranking import bootstrap_ci

    x = [0.105, 0.110, 0.064, 0.031, 0.069, 0.059, 0.050, 0.020, -0.003, 0.006, 0.010]
    y = [0.386, 0.356, 0.353, 0.328, 0.314, 0.252, 0.115, 0.036, 0.017, 0.014, -0.006]
    ci, reason = bootstrap_ci(x, y, seed=3, resamples=2000)
    ref = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
                          n_resamples=2000, method="percentile", rng=np.random.default_rng(3))
    assert reason is None and ci == pytest.approx([ref.confidence_interval.low, ref.confidence_interval.high])
    assert ci[0] < stats.spearmanr(x, y).statistic < ci[1]
    # three points: a tenth of the resamples repeat one poison three times, so no interval
    ci, reason = bootstrap_ci([1, 2, 3], [2, 5, 9])
    assert ci is None and "constant side" in reason


def test_spearman_needs_three_points_and_variation():
    from certify.scores.ranking import spearman

    two = spearman([0.1, 0.2], [0.3, 0.4])
    assert two["rho"] is None and two["p"] is None and two["reason"] == "needs 3 poisons"
    assert two["p_permutation"] is None and two["ci"] is None
    flat = spearman([0.1, 0.1, 0.1], [0.3, 0.4, 0.5])
    assert flat["rho"] is None and "constant" in flat["reason"]


# ----------------------------------------------------------------------------- the comparison

def _section(clean, protected, *, certified=None, ud=None, mi=None, cov=None, defenses=None):
    sec = {"empirical": {"clean_accuracy": clean, "protected_accuracy": protected,
                         "defenses": {d: {"accuracy": a, "peak_accuracy": a} for d, (a, _) in (defenses or {}).items()}}}
    if certified is not None:
        sec["certificate"] = {"curve": [{"eta_over_sigma": 0.05, "learnability": 0.99},
                                        {"eta_over_sigma": 0.1, "learnability": certified}]}
    if ud is not None:
        sec["sal_ud"] = {"ud": ud, "defended": {d: {"ud": u} for d, (_, u) in (defenses or {}).items()}}
    if mi is not None:
        sec["mutual_information"] = {"gap": mi}
    if cov is not None:
        sec["covariance"] = {"score": cov}
    return sec


def test_comparison_rows_gaps_and_correlations():
    from scipy import stats

    from certify.scores.comparison import comparison

    d = {"jpeg": (0.5, 0.9)}
    poisons = {"none": _section(0.8, 0.8, certified=0.7, ud=1.0, mi=0.0, cov=1.0, defenses={"jpeg": (0.6, 1.1)}),
               "a": _section(0.8, 0.2, certified=0.3, ud=0.2, mi=0.30, cov=1.6, defenses=d),
               "b": _section(0.8, 0.5, certified=0.5, ud=0.6, mi=0.10, cov=1.1, defenses=d),
               "c": _section(0.8, 0.4, certified=0.4, ud=0.5, mi=0.20, cov=1.3, defenses=d),
               "d": _section(0.8, 0.7, ud=0.9, mi=0.15, defenses=d)}  # no certificate, no covariance
    comp = comparison(poisons)
    rows = {r["poison"]: r for r in comp["rows"]}
    assert list(rows) == ["none", "a", "b", "c", "d"] and rows["none"]["control"] and not rows["a"]["control"]
    assert rows["a"]["accuracy_drop"] == pytest.approx(0.6) and rows["none"]["accuracy_drop"] == 0
    assert rows["a"]["certified"] == 0.3 and rows["a"]["certified_drop"] == pytest.approx(0.4)
    assert rows["none"]["certified_drop"] is None and rows["d"]["certified_status"] == "absent"
    assert rows["a"]["defenses"] == {"jpeg": {"accuracy": 0.5, "ud": 0.9}} and comp["defenses"] == ["jpeg"]
    mi = comp["correlations"]["mi_gap"]  # four poisons, the control left out
    drops = [0.6, 0.3, 0.4, 0.1]
    assert mi["poisons"] == ["a", "b", "c", "d"]
    assert mi["rho"] == pytest.approx(stats.spearmanr([0.30, 0.10, 0.20, 0.15], drops).statistic)
    assert mi["p_permutation"] == pytest.approx(_perm_scipy([0.30, 0.10, 0.20, 0.15], drops, n_resamples=np.inf))
    assert comparison(poisons, seed=0)["correlations"] == comp["correlations"]  # seeded
    cov = comp["correlations"]["covariance"]  # d has no score: three points, ranked alike
    assert cov["poisons"] == ["a", "b", "c"] and cov["rho"] == pytest.approx(1.0)
    # two poisons: no correlation, with the reason; without a control no gap
    small = comparison({k: poisons[k] for k in ("a", "b")})
    assert small["correlations"]["mi_gap"]["reason"] == "needs 3 poisons" and small["control"] is None
    assert all(r["certified_drop"] is None for r in small["rows"])
