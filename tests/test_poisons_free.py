"""The model-free poisons (LSP, OPS, AR): budgets, determinism, one pixel for OPS, per-image LSP and AR
perturbations with class structure."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attacks.ar
from attacks.ar import ar_generate, ar_samples, find_processes, matched_filters
from attacks.base import POISONS, CraftContext, per_image_norm
from certify.errors import UserError

FREE = ("lsp", "ops", "ar")


def make_ctx(x: torch.Tensor, y: torch.Tensor, k: int, seed: int = 7) -> CraftContext:
    return CraftContext(x, y, k, make_model=None, train=None, seed=seed, device=torch.device("cpu"))


def images(n: int, shape, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n,) + tuple(shape), generator=g).to(torch.float32) / 255
    y = torch.arange(n) % k
    return x, y


def craft(name: str, ctx: CraftContext, **overrides):
    p = POISONS.params(name, overrides)
    return POISONS.get(name).factory(ctx, p), p


def budget(p, shape) -> float:
    return p.epsilon_for(shape) if hasattr(p, "epsilon_for") else p.epsilon


def on_grid(x: torch.Tensor) -> bool:
    return bool(torch.equal(torch.round(x * 255) / 255, x))


SHAPES = [(3, 32, 32), (1, 8, 8), (3, 12, 20)]


@pytest.mark.parametrize("name", FREE)
@pytest.mark.parametrize("shape", SHAPES)
def test_budget_grid_and_determinism(name, shape):
    x, y = images(40, shape, 4)
    ctx = make_ctx(x, y, 4)
    r1, p = craft(name, ctx)
    r2, _ = craft(name, make_ctx(x, y, 4))
    assert r1.shape == x.shape and r1.dtype == torch.float32
    assert torch.equal(r1, r2), "same seed, same data: same release"
    assert on_grid(r1) and float(r1.min()) >= 0 and float(r1.max()) <= 1
    eps = budget(p, shape)
    measured = per_image_norm(r1 - x, p.norm)
    assert float(measured.max()) <= eps + 1e-6
    assert bool((measured > 0).all())
    if name != "ops":  # the search is deterministic, the random patterns depend on the seed
        r3, _ = craft(name, make_ctx(x, y, 4, seed=8))
        assert not torch.equal(r1, r3)


@pytest.mark.parametrize("name", ["lsp", "ar"])
def test_l2_budget_scales_with_image_size(name):
    p = POISONS.params(name)
    assert p.norm == "l2"
    assert p.epsilon_for((3, 32, 32)) == pytest.approx(p.epsilon)
    assert p.epsilon_for((1, 8, 8)) == pytest.approx(p.epsilon * (64 / 3072) ** 0.5)
    assert p.epsilon_for((3, 64, 64)) == pytest.approx(2 * p.epsilon)
    fixed = POISONS.params(name, {"scale_to_size": False, "epsilon": 0.5})
    assert fixed.epsilon_for((1, 8, 8)) == 0.5
    # the l2 budget is nearly used up (clipping aside), not just respected
    x = torch.full((20, 3, 32, 32), 128 / 255)
    y = torch.arange(20) % 2
    r, _ = craft(name, make_ctx(x, y, 2))
    n = per_image_norm(r - x, "l2")
    assert float(n.max()) <= p.epsilon + 1e-6 and float(n.min()) > 0.95 * p.epsilon


def gray_release(name: str, n: int, shape, k: int, seed: int = 7, **overrides):
    """Mid-gray images (nothing clipped): the release minus the image is exactly the rounded delta."""
    x = torch.full((n,) + tuple(shape), 128 / 255)
    y = torch.arange(n) % k
    r, p = craft(name, make_ctx(x, y, k, seed), **overrides)
    return r - x, y, p


@pytest.mark.parametrize("name", ["lsp", "ar"])
def test_every_image_gets_its_own_perturbation(name):
    d, y, _ = gray_release(name, 30, (3, 16, 16), 3)
    flat = d.reshape(len(d), -1)
    for k in range(3):
        mine = flat[y == k]
        # no two images of a class share a perturbation
        assert bool((torch.cdist(mine, mine) + torch.eye(len(mine)) > 1e-3).all())


def test_lsp_perturbations_are_linearly_separable_by_class():
    from sklearn.linear_model import LogisticRegression

    d, y, _ = gray_release("lsp", 120, (3, 16, 16), 4)
    flat = d.reshape(len(d), -1).numpy()
    fit = LogisticRegression(max_iter=2000).fit(flat[:80], y[:80].numpy())
    assert fit.score(flat[80:], y[80:].numpy()) == 1.0  # held-out images, a linear classifier


def test_lsp_too_many_classes_for_the_patch_grid_is_a_user_error():
    x, y = images(8, (1, 8, 8), 4)
    with pytest.raises(UserError, match="lower patch"):
        craft("lsp", make_ctx(x, y, 4), patch=32)  # one patch of one channel: 2 classes at most


def test_ar_generate_follows_the_recursion():
    g = torch.Generator().manual_seed(0)
    coef = torch.randn(5, 8, generator=g)
    coef = coef / coef.sum(1, keepdim=True)
    start = torch.randn(5, 7, 9, generator=g)
    out = ar_generate(coef, start)
    ref = start.clone()  # raster order, one pixel at a time
    for i in range(2, 7):
        for j in range(2, 9):
            ref[:, i, j] = (ref[:, i - 2:i + 1, j - 2:j + 1].reshape(5, 9)[:, :8] * coef).sum(1)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[:, :2], start[:, :2]) and torch.equal(out[:, :, :2], start[:, :, :2])


def test_ar_each_image_is_a_sample_of_its_classs_process():
    shape, k = (3, 16, 16), 3
    d, y, p = gray_release("ar", 45, shape, k)
    coef = find_processes(k, shape, p, torch.Generator().manual_seed(7))  # the craft's search (seed 7)
    max_norm, _ = p.thresholds_for(shape)
    fresh = ar_samples(coef, shape, p.crop, torch.Generator().manual_seed(1))
    assert bool((fresh.flatten(1).norm(dim=1) <= max_norm).all())
    # a process's matched filter is ~0 on its own samples (8-bit rounding aside) and responds to the
    # others': the filters classify every released perturbation by its class
    response = F.relu(F.conv2d(d, matched_filters(coef))).sum((2, 3))
    assert torch.equal(response.argmin(1), y)
    own = response.gather(1, y.view(-1, 1)).flatten()
    assert float(own.max()) < 0.2 * float(response.max(1).values.min())


def test_ar_search_thresholds_are_the_published_ones_scaled_with_the_image():
    p = POISONS.params("ar")
    assert p.thresholds_for((3, 32, 32)) == pytest.approx((50.0, 10.0))
    assert p.thresholds_for((1, 8, 8)) == pytest.approx((50.0 * (64 / 3072) ** 0.5, 10.0 * (64 / 3072) ** 0.5))
    assert POISONS.params("ar", dataset="cifar100").min_response == 3.0  # the authors' CIFAR-100 search


def test_ar_search_that_cannot_finish_is_a_user_error(monkeypatch):
    monkeypatch.setattr(attacks.ar, "MAX_CANDIDATES", attacks.ar.BATCH)
    x, y = images(8, (1, 8, 8), 4)
    with pytest.raises(UserError, match="lower min_response") as info:
        craft("ar", make_ctx(x, y, 4), min_response=1e6)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 8, 8)])
def test_ops_changes_exactly_one_pixel_per_image(shape):
    x, y = images(80, shape, 4, seed=3)
    r, p = craft("ops", make_ctx(x, y, 4))
    assert p.norm == "l0" and p.epsilon == 1
    changed = ((r - x).abs().amax(1) > 0).reshape(len(x), -1)  # pixel changed in any channel
    n = changed.sum(1)
    assert bool((n <= 1).all())
    pos, colour = [], []
    for k in range(4):
        idx = (y == k).nonzero().flatten()
        # one position and one extreme colour per class
        flat = r[idx].reshape(len(idx), shape[0], -1)
        where = changed[idx].any(0).nonzero().flatten()
        assert len(where) == 1
        pos.append(int(where[0]))
        colours = flat[:, :, pos[-1]]
        assert bool(((colours == 0) | (colours == 1)).all())
        assert bool((colours == colours[0]).all())
        colour.append(tuple(colours[0].tolist()))
        # every image whose pixel differs from the colour got exactly that one pixel changed
        differs = (x[idx].reshape(len(idx), shape[0], -1)[:, :, pos[-1]] != colours[0]).any(1)
        assert torch.equal(n[idx], differs.to(n.dtype))
    assert len(set(zip(pos, colour))) == 4, "every class gets its own (position, colour)"
    if shape[0] == 3:
        assert bool((n == 1).all())  # random RGB images never already hold a cube corner here


def test_ops_finds_the_consistent_pixel():
    # class 0 is always dark at pixel (2, 5) and varies elsewhere: white there is the shortcut
    g = torch.Generator().manual_seed(0)
    x = torch.randint(60, 200, (30, 3, 8, 8), generator=g).to(torch.float32) / 255
    y = torch.zeros(30, dtype=torch.int64)
    y[15:] = 1
    x[:15, :, 2, 5] = 3 / 255
    r, _ = craft("ops", make_ctx(x, y, 2))
    assert torch.equal(r[:15, :, 2, 5], torch.ones(15, 3))


@pytest.mark.parametrize("name,bad", [("lsp", {"epsilon": -1.0}), ("lsp", {"patch": 0}), ("ar", {"crop": -2}),
                                      ("ar", {"epsilon": float("nan")}), ("ops", {"epsilon": 2.0}),
                                      ("lsp", {"scale_to_size": "yes"}), ("ops", {"pixels": 1}),
                                      ("lsp", {"class_sep": 0.0}), ("ar", {"max_norm": 0.0}),
                                      ("ar", {"min_response": -1.0})])
def test_bad_params_are_one_line_user_errors(name, bad):
    with pytest.raises(UserError) as info:
        POISONS.params(name, bad)
    msg = str(info.value)
    assert "\n" not in msg and next(iter(bad)) in msg


def test_registered_with_summaries():
    names = POISONS.names()
    for name in FREE:
        assert name in names
        assert POISONS.get(name).summary and "\n" not in POISONS.get(name).summary
