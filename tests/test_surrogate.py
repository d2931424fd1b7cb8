"""The RWP surrogate's two update forms: `quick` (one step on the mean over levels, as recorded in the
baselines) and `reference` (one step per level, draws averaged per level, gradients clipped at 5.0)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from certify.certificate.surrogate import recipe, train_surrogate
from certify.config import load_config
from certify.errors import UserError
from certify.progress import set_quiet
from certify.training import TrainConfig

N, BATCH = 32, 16  # two batches per epoch


@pytest.fixture(autouse=True)
def quiet():
    set_quiet(True)
    yield
    set_quiet(False)


def _watch(cfg, digits, scale: float = 1.0) -> tuple[list[float], int]:
    """Train a linear model as `cfg` says; the gradient norm at every optimizer step, and the number
    of training-mode forward passes (each weight draw is one)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    norms, passes = [], [0]

    def before_step(opt, args, kwargs):
        norms.append(float(torch.cat([p.grad.flatten() for g in opt.param_groups for p in g["params"]]).norm()))

    def count(module, inputs):
        passes[0] += module.training

    handle = register_optimizer_step_pre_hook(before_step)
    model.register_forward_pre_hook(count)
    try:
        x, y = digits.x_train[:N] * scale, digits.y_train[:N]
        train_surrogate(model, x, y, TrainConfig(epochs=1, batch_size=BATCH, flip=False), cfg, 0.1, seed=0)
    finally:
        handle.remove()
    return norms, passes[0]


def test_reference_profile_steps_once_per_level_on_averaged_draws_with_clipping(digits):
    cfg = load_config(None, {"profile": "reference", "dataset": "digits"}).surrogate
    assert (cfg.init, cfg.epochs, cfg.levels, cfg.step, cfg.grad_clip) == ("scratch", 60, 6, "per-level", 5.0)
    assert cfg.draws_per_level > 1
    cfg = dataclasses.replace(cfg, epochs=5, draws_per_level=3)  # plain for 1 epoch (20 %), then RWP for 4
    # inputs scaled up so that the gradients exceed the clipping norm
    norms, passes = _watch(cfg, digits, scale=50.0)
    batches = N // BATCH
    assert len(norms) == batches * 1 + batches * 4 * 6  # one optimizer step per level and batch
    assert passes == batches * 1 + batches * 4 * (1 + 5 * 3)  # level 0 once, the 5 noisy levels 3 draws each
    assert max(norms) <= 5.0 + 1e-4  # clipped before every step...
    unclipped, _ = _watch(dataclasses.replace(cfg, grad_clip=0.0), digits, scale=50.0)
    assert max(unclipped) > 5.0  # ...where unclipped gradients are larger


def test_quick_profile_takes_one_unclipped_step_on_the_mean(digits):
    cfg = load_config(None, {"dataset": "digits"}).surrogate
    assert (cfg.init, cfg.step, cfg.grad_clip) == ("victim", "mean", 0.0)
    norms, passes = _watch(dataclasses.replace(cfg, epochs=2), digits, scale=50.0)
    batches = N // BATCH
    assert len(norms) == 2 * batches
    assert passes == 2 * batches * (1 + (cfg.levels - 1) * cfg.draws_per_level)
    assert max(norms) > 5.0


def test_recipe_names_the_reference_form_and_keeps_the_quick_one():
    quick = load_config(None, {}).surrogate
    assert recipe(quick, 0.02) == {"kind": "rwp", "init": "victim", "levels": [0.0, 0.01, 0.02], "epochs": 3,
                                   "draws_per_level": 1}  # as recorded in the baselines
    ref = recipe(load_config(None, {"profile": "reference"}).surrogate, 0.25)
    assert ref["step"] == "per-level" and ref["grad_clip"] == 5.0 and ref["epochs"] == 60
    assert ref["levels"] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])


@pytest.mark.parametrize("bad, field", [({"step": "each"}, "surrogate.step"),
                                        ({"grad_clip": -1.0}, "surrogate.grad_clip")])
def test_bad_surrogate_settings_name_the_field(bad, field):
    with pytest.raises(UserError, match=field):
        load_config(None, {"surrogate": bad})
