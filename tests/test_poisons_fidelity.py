"""The poisons follow their references where a review found them apart: REM's loop and final
regeneration, PUE's zero start and per-sample signed class step, OPS's mean/std score over images and
channels, MI-UE's flip of the clean image with δ added unflipped."""
from __future__ import annotations

import pytest
import torch

import attacks.miue as miue
import attacks.pue as pue
import attacks.rem as rem
from attacks.base import POISONS, CraftContext
from attacks.ops import ops_scores, ops_search
from certify.models import build_model
from certify.progress import set_quiet
from certify.training import TrainConfig

N = 120


@pytest.fixture(autouse=True)
def quiet():
    set_quiet(True)
    yield
    set_quiet(False)


def context(digits, flip: bool = False) -> CraftContext:
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, flip=flip)
    return CraftContext(digits.x_train[:N].clone(), digits.y_train[:N].clone(), 10,
                        lambda s: build_model("cnn", (1, 8, 8), 10, s), cfg, 7, torch.device("cpu"))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ REM
def test_rem_schedule_per_profile():
    quick, ref = POISONS.params("rem", {}), POISONS.params("rem", profile="reference")
    assert (ref.model_steps, ref.lr_decay_every, ref.pgd_steps, ref.eot, ref.adv_steps) == (5000, 2000, 10, 5, 10)
    assert ref.adv_step_size == pytest.approx(0.8 / 255) and ref.step_size == pytest.approx(1.6 / 255)
    # quick: 200 steps at batch 128 are 5 epochs of cifar10-mini's 5,000 images
    assert quick.model_steps == 200 and quick.model_steps * 128 >= 5 * 5000
    assert quick.lr_decay_every / quick.model_steps == ref.lr_decay_every / ref.model_steps


def test_rem_recrafts_each_batch_and_regenerates_every_delta_with_the_final_model(digits, monkeypatch):
    calls = []
    real = rem.recraft

    def spy(model, xb, yb, p, gen, flip):
        out = real(model, xb, yb, p, gen, flip)
        calls.append((len(xb), weights(model), out.clone()))
        return out

    monkeypatch.setattr(rem, "recraft", spy)
    p = POISONS.params("rem", {"model_steps": 3, "craft_batch": 50}, dataset="digits")
    delta, model = rem.craft_rem_delta(context(digits), p)
    final = weights(model)
    regen = -(-N // p.craft_batch)
    assert len(calls) == p.model_steps + regen
    # one re-crafting per model step, of that step's batch, with the model as it was then
    assert [n for n, _, _ in calls[:p.model_steps]] == [32] * p.model_steps
    assert not all(torch.equal(calls[0][1][k], final[k]) for k in final)  # the model moved since
    # then every δ again with the final model, and those are what is returned
    for _, w, _ in calls[p.model_steps:]:
        assert all(torch.equal(w[k], final[k]) for k in final)
    assert torch.equal(delta, torch.cat([out for _, _, out in calls[p.model_steps:]]))
    assert float(delta.abs().max()) <= p.epsilon + 1e-7


# ------------------------------------------------------------------ PUE
def test_pue_class_step_is_the_mean_of_per_sample_signed_steps():
    step, eps = 0.8 / 255, 8 / 255
    delta = torch.zeros(3, 1, 1, 2)
    y = torch.tensor([0, 0, 0, 1])
    # class 0, pixel 0: signs +, +, - with a large negative gradient (summed: negative)
    grad = torch.tensor([[1.0, -1.0], [2.0, -1.0], [-10.0, -1.0], [3.0, 0.0]]).view(4, 1, 1, 2)
    new = pue.classwise_sign_step(delta, grad, y, step, eps)
    assert torch.allclose(new[0].flatten(), torch.tensor([-step / 3, step]))  # mean of -step·sign
    assert torch.allclose(new[1].flatten(), torch.tensor([-step, 0.0]))
    assert torch.equal(new[2], delta[2])  # no image of class 2 in the batch: unchanged
    at_edge = pue.classwise_sign_step(torch.full((3, 1, 1, 2), -eps), grad, y, step, eps)
    assert float(at_edge.min()) >= -eps - 1e-7


def test_pue_delta_starts_at_zero_and_moves_by_per_sample_steps(digits, monkeypatch):
    seen = []
    real = pue.classwise_sign_step

    def spy(delta, grad, y, step, epsilon):
        seen.append((delta.clone(), grad.shape, y.clone()))
        return real(delta, grad, y, step, epsilon)

    monkeypatch.setattr(pue, "classwise_sign_step", spy)
    p = POISONS.params("pue", {"max_rounds": 1, "sigma_max": 0.01}, dataset="digits")
    released = POISONS.get("pue").factory(context(digits), p)
    assert seen and torch.equal(seen[0][0], torch.zeros_like(seen[0][0]))
    _, shape, y = seen[0]
    assert shape[0] == len(y)  # one gradient per image, not per class
    assert released.shape == (N, 1, 8, 8)


def test_pue_draws_per_profile():
    assert POISONS.params("pue", {}).draws_model == 1
    assert POISONS.params("pue", profile="reference").draws_model == 100


# ------------------------------------------------------------------ OPS
def test_ops_score_pools_images_and_channels_where_per_pixel_l2_would_differ():
    # position 0: every image is (0, 128, 255)/255 -- its L2 distance to any corner is the same in
    # every image (std 0, so a per-pixel L2 score is unbounded), but its channels deviate unequally;
    # position 1: grey that varies a little between images, far from white in every channel
    x = torch.zeros(4, 3, 1, 2)
    x[:, :, 0, 0] = torch.tensor([0, 128, 255]) / 255
    x[:, :, 0, 1] = torch.tensor([51, 64, 51, 64]).view(4, 1) / 255
    y = torch.zeros(4, dtype=torch.int64)
    [(pos, colour)] = ops_search(x, y, 1)
    assert pos == 1 and colour.tolist() == [1.0, 1.0, 1.0]
    # each score is mean / std of the n·C pooled |c - x| (population std), as the reference's
    scores = ops_scores(x, torch.tensor([[1.0, 1.0, 0.0]]))
    d = (torch.tensor([1.0, 1.0, 0.0]).view(1, 3) - x[:, :, 0, 0]).abs().flatten()
    assert scores[0, 0] == pytest.approx(float(d.mean() / (d.std(unbiased=False) + 1e-6)), rel=1e-5)


# ------------------------------------------------------------------ MI-UE
def test_miue_augment_flips_the_clean_image_and_adds_delta_unflipped():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 4, 4, generator=g) * 0.5 + 0.25
    delta = (torch.rand(16, 1, 4, 4, generator=g) - 0.5) * 0.1
    out = miue.augment(x, delta, torch.Generator().manual_seed(1), True)
    flipped = [i for i in range(16) if torch.allclose(out[i], x[i].flip(-1) + delta[i])]
    kept = [i for i in range(16) if torch.allclose(out[i], x[i] + delta[i])]
    assert flipped and kept and len(flipped) + len(kept) == 16
    for i in flipped:  # not the flip of x + δ
        assert not torch.allclose(out[i], (x[i] + delta[i]).flip(-1))


def test_miue_both_steps_use_the_reference_augmentation(digits, monkeypatch):
    calls, flips = [], []
    real_augment, real_step = miue.augment, miue.model_step

    def augment_spy(x, delta, gen, flip):
        calls.append(flip)
        return real_augment(x, delta, gen, flip)

    def step_spy(model, opt, xb, yb, gen, flip, loss_fn=None):
        flips.append(flip)
        return real_step(model, opt, xb, yb, gen, flip, loss_fn)

    monkeypatch.setattr(miue, "augment", augment_spy)
    monkeypatch.setattr(miue, "model_step", step_spy)
    p = POISONS.params("miue", {"rounds": 1, "steps": 1, "craft_batch": 60})
    miue.craft_miue_delta(context(digits, flip=True), p)
    assert len(flips) == -(-N // 32) and not any(flips)  # model steps get flip(x) + δ, flipped once only
    assert len(calls) == len(flips) + -(-N // 60) and all(calls)  # and the δ steps too
