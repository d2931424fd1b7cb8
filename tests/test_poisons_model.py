"""Model-based poisons (miue, em, em-classwise, pue, rem, tap) on a small digits subset with tiny params:
budget on released data, 1/255 grid, determinism, the crafting objectives go down, bad params."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attacks._common import crafting_model
from attacks.base import POISONS, CraftContext, measure
from attacks.em import classwise_step, craft_em_delta
from attacks.miue import craft_miue_delta, delta_steps, dist_loss, sim_loss
from certify.data import load_dataset
from certify.errors import UserError
from certify.models import build_model
from certify.progress import set_quiet
from certify.training import TrainConfig, train

N = 300
# Fast overrides for digits (8x8x1): also the ones suggested for the `digits` dataset as a whole.
TINY = {
    "miue": {"rounds": 2, "steps": 2},
    "em": {"max_rounds": 2, "model_steps": 5, "pgd_steps": 3},
    "em-classwise": {"max_rounds": 2, "model_steps": 5, "pgd_steps": 3},
    "pue": {"max_rounds": 2, "model_steps": 3, "levels": 3, "subset": 0.5, "draws_delta": 2, "rwp_switch": 0.0},
    "rem": {"model_steps": 3, "pgd_steps": 2, "eot": 1, "adv_steps": 1, "crop": 1},
    "tap": {"train_epochs": 2, "steps": 5},
}
BAD = {
    "miue": [{"rounds": 0}, {"tau": 0.0}, {"zeta": -1.0}, {"steps": 1.5}, {"step_end": float("nan")}, {"lr": 0.0},
             {"weight_decay": -1e-4}],
    "em": [{"max_rounds": 0}, {"target_accuracy": 1.5}, {"step_size": -1.0}, {"epsilon": -0.1}],
    "em-classwise": [{"pgd_steps": 0}, {"target_accuracy": 0.0}],
    "pue": [{"levels": 0}, {"subset": 0.0}, {"rwp_switch": 2.0}, {"sigma_max": -0.1}, {"draws_delta": 0}],
    "rem": [{"eot": 0}, {"rho": -1.0}, {"crop": -1}, {"adv_steps": -1}],
    "tap": [{"steps": 0}, {"train_epochs": 0}, {"step_size": 0.0}],
}


@pytest.fixture(scope="module", autouse=True)
def quiet():
    set_quiet(True)
    torch.set_num_threads(2)
    yield
    set_quiet(False)


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    return d.x_train[:N].clone(), d.y_train[:N].clone()


def context(digits, seed: int = 7) -> CraftContext:
    x, y = digits
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, flip=False)

    def make_model(s: int):
        return build_model("cnn", (1, 8, 8), 10, s)

    return CraftContext(x, y, 10, make_model, cfg, seed, torch.device("cpu"))


def craft(name, ctx, **extra):
    params = POISONS.params(name, {**TINY[name], **extra})
    return POISONS.get(name).factory(ctx, params), params


def on_grid(x: torch.Tensor) -> bool:
    return bool(torch.equal(torch.round(x * 255) / 255, x))


@pytest.mark.parametrize("name", sorted(TINY))
def test_budget_grid_range_and_determinism(digits, name):
    ctx = context(digits)
    released, params = craft(name, ctx)
    assert released.shape == ctx.x.shape and released.dtype == torch.float32
    assert type(params).norm == "linf" and params.epsilon == pytest.approx(8 / 255)
    assert measure(ctx.x, released, "linf") <= params.epsilon + 1e-6
    assert float(released.min()) >= 0 and float(released.max()) <= 1
    assert on_grid(released)
    assert not torch.equal(released, ctx.x)  # it did perturb something
    again, _ = craft(name, context(digits))
    assert torch.equal(released, again)


def test_registered_with_summary_and_params():
    for name in TINY:
        entry = POISONS.get(name)
        assert entry.summary and "\n" not in entry.summary
        assert entry.params is not None and entry.params.__doc__ and "ublished" in entry.params.__doc__


@pytest.mark.parametrize("name,bad", [(n, b) for n, bs in BAD.items() for b in bs])
def test_bad_params_are_one_line_user_errors(name, bad):
    with pytest.raises(UserError) as info:
        POISONS.params(name, bad)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_unknown_param_is_a_user_error():
    with pytest.raises(UserError, match="unknown key"):
        POISONS.params("miue", {"nope": 1})


def test_miue_steps_lower_lsim_of_a_fixed_model(digits):
    x, y = digits
    model = build_model("cnn", (1, 8, 8), 10, 3)
    train(model, x, y, TrainConfig(epochs=1, batch_size=64, flip=False), 3)
    model.eval()
    p = POISONS.params("miue", {"steps": 3, "craft_batch": N})
    delta = delta_steps(model, x, y, torch.zeros_like(x), p, 0.4 / 255, torch.Generator().manual_seed(0), False)
    assert float(delta.abs().max()) <= p.epsilon + 1e-6
    with torch.no_grad():
        before = float(sim_loss(model.features(x), y, p.tau))
        after = float(sim_loss(model.features((x + delta).clamp(0, 1)), y, p.tau))
    assert after < before - 1e-3, (before, after)


def test_miue_crafting_model_trains_with_its_own_lr_not_the_runs(digits):
    """The published crafting SGD (lr 0.1, wd 1e-4) is MI-UE's own: the run's lr (0.05 here) is not used."""
    ctx = context(digits)
    start = {k: v.clone() for k, v in crafting_model(ctx, "miue").state_dict().items()}

    def moved(lr: float) -> float:
        _, model = craft_miue_delta(ctx, POISONS.params("miue", {"rounds": 1, "steps": 1, "lr": lr}))
        return max(float((v - start[k]).abs().max()) for k, v in model.state_dict().items() if v.is_floating_point()
                   and "running" not in k)

    assert POISONS.params("miue", {}).lr == 0.1 and POISONS.params("miue", {}).weight_decay == 1e-4
    assert moved(1e-9) < 1e-6 < 1e-3 < moved(0.1)


def test_miue_losses_on_a_toy_batch():
    y = torch.tensor([0, 0, 1, 1])
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # each row: log(2 e^10 / (2 e^10 + 2 e^0)) -> close to 0 when classes are pulled together
    assert float(sim_loss(z, y, 0.1)) == pytest.approx(math.log1p(math.exp(-10.0)), abs=1e-6)
    assert float(dist_loss(z, y)) == pytest.approx(0.0, abs=1e-5)
    z2 = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert float(dist_loss(z2, y)) == pytest.approx(math.log1p(1.0) / 2, rel=1e-4)
    zr = torch.randn(6, 3, requires_grad=True)
    (sim_loss(zr, torch.tensor([0, 0, 1, 1, 2, 2]), 0.1) + dist_loss(zr, torch.tensor([0, 0, 1, 1, 2, 2]))).backward()
    assert torch.isfinite(zr.grad).all()


@pytest.mark.parametrize("classwise", [False, True])
def test_em_lowers_crafting_models_loss(digits, classwise):
    ctx = context(digits)
    name = "em-classwise" if classwise else "em"
    p = POISONS.params(name, TINY[name])
    delta, model = craft_em_delta(ctx, p, classwise=classwise, name=name)
    d = delta[ctx.y] if classwise else delta
    with torch.no_grad():
        clean = float(F.cross_entropy(model(ctx.x), ctx.y))
        poisoned = float(F.cross_entropy(model((ctx.x + d).clamp(0, 1)), ctx.y))
    assert poisoned < clean, (clean, poisoned)


def test_em_classwise_step_is_the_class_mean_of_per_sample_steps(digits):
    x, y = digits
    model = build_model("cnn", (1, 8, 8), 10, 3)
    model.eval()
    xb, yb = x[:60], y[:60]
    p = POISONS.params("em-classwise", {"pgd_steps": 1})
    delta = torch.zeros((10, 1, 8, 8))
    new = classwise_step(model, xb, yb, delta, p)
    # one step from δ = 0: each sample moves by -step * sign(its own gradient); the class δ is the mean
    d = torch.zeros_like(xb, requires_grad=True)
    F.cross_entropy(model((xb + d).clamp(0, 1)), yb).backward()
    own = -p.step_size * d.grad.sign()
    for k in range(10):
        assert torch.allclose(new[k], own[yb == k].mean(0), atol=1e-7)
    # a mean of signs, not the sign of a summed gradient: fractional steps occur
    steps = (new / p.step_size).flatten()
    assert bool(((steps.abs() > 0.01) & (steps.abs() < 0.99)).any())
    assert float(new.abs().max()) <= p.epsilon + 1e-7
    two_steps = POISONS.params("em-classwise", {"pgd_steps": 2})
    only_two = classwise_step(model, xb[yb < 2], yb[yb < 2], delta + 1 / 255, two_steps)
    assert torch.equal(only_two[2:], (delta + 1 / 255)[2:])  # classes not in the batch keep their δ
