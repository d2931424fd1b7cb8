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
    sec = mi_section(model, model, x, y, MIConfig(projections=8, images=200), seed=0)
    assert sec["gap"] == 0.0 and sec["histogram_gap"] == 0.0
    assert sec["images"] == 200 and sec["estimator"] == "ksg" and sec["clean"] > 0


@pytest.mark.parametrize("cfg,field", [(SalConfig(rho=0), "sal.rho"), (SalConfig(method="full"), "sal.method"),
                                       (SalConfig(steps=2.5), "sal.steps"), (SalConfig(subset=-1), "sal.subset"),
                                       (MIConfig(k=0), "mi.k"), (MIConfig(estimator="kde"), "mi.estimator"),
                                       (MIConfig(bins=1), "mi.bins")])
def test_bad_config(cfg, field):
    with pytest.raises(UserError, match=field):
        cfg.validate("scores")
