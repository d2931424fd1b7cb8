"""REM, robust error-minimizing noise (Fu et al., ICLR 2022), sample-wise.

Like EM, but the crafting model is trained adversarially against a defensive perturbation ρ with
‖ρ‖∞ ≤ ρ_a (PGD that maximizes the cross-entropy), and δ minimizes the loss of that adversarial
example, averaged over EOT random augmentations (flip and crop) of x + δ:
    min_δ E_aug max_{‖ρ‖≤ρ_a} CE(f(aug(x + δ) + ρ), y).
Fixed rounds of (model batches, δ steps over every batch), as in the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import POISONS, CraftContext, PoisonParams, release, sign_step
from attacks._common import (BatchStream, batches, check_int_positive, crafting_model, model_step, perturbed_images,
                        sgd, uniform_init)
from certify.errors import UserError
from certify.progress import progress
from certify.seeding import derive
from certify.training import flip_crop
from certify.validation import MAX_CROP, check_at_most, check_nonnegative, check_positive


@dataclass
class REMParams(PoisonParams):
    """REM, l-inf.

    Published (CIFAR-10, ResNet-18): eps 8/255, ρ_a = 4/255 (10 PGD steps of 0.8/255 for ρ), δ: 10 PGD
    steps of 1.6/255, EOT over 5 augmentations (crop 4 + flip), model trained 10 batches between
    δ updates, 5000 model steps in all. CPU defaults (cifar10-mini, cnn): 4 rounds, 3 δ steps,
    EOT 2, ρ from 2 PGD steps of 2/255.
    """
    dataset_defaults: ClassVar[dict[str, dict]] = {
        "digits": {"rounds": 1, "model_steps": 3, "pgd_steps": 2, "eot": 1, "adv_steps": 1, "crop": 1}}
    rho: float = 4 / 255  # ρ_a: the defensive (adversarial-training) radius
    adv_steps: int = 2  # PGD steps for ρ (published 10)
    adv_step_size: float = 2 / 255  # published 0.8/255 with 10 steps
    rounds: int = 4
    model_steps: int = 10  # adversarial-training batches of the crafting model per round
    pgd_steps: int = 3  # signed steps on δ per batch per round (published 10)
    step_size: float = 1.6 / 255
    eot: int = 2  # augmentations averaged per δ step (published 5)
    crop: int = 4  # EOT random-crop padding in pixels (0: flip only)
    craft_batch: int = 512

    def validate(self, where: str) -> None:
        super().validate(where)
        check_int_positive(where, rounds=self.rounds, model_steps=self.model_steps, pgd_steps=self.pgd_steps,
                           eot=self.eot, craft_batch=self.craft_batch)
        check_positive(where, epsilon=self.epsilon, step_size=self.step_size)
        check_nonnegative(where, rho=self.rho, adv_step_size=self.adv_step_size)
        if isinstance(self.adv_steps, bool) or not isinstance(self.adv_steps, int) or self.adv_steps < 0:
            raise UserError(f"{where}: adv_steps must be an integer >= 0, got {self.adv_steps!r}")
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 0:
            raise UserError(f"{where}: crop must be an integer >= 0, got {self.crop!r}")
        check_at_most(where, MAX_CROP, crop=self.crop)


def adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: REMParams, gen: torch.Generator) -> torch.Tensor:
    """ρ (detached): PGD ascent on the cross-entropy from a random start, ‖ρ‖∞ ≤ ρ_a, x + ρ in [0, 1]."""
    if p.adv_steps == 0 or p.rho == 0:
        return torch.zeros_like(x)
    was_training = model.training
    model.eval()
    x = x.detach()
    rho = (torch.rand(x.shape, generator=gen).to(x.device) * 2 - 1) * p.rho
    rho = (x + rho).clamp(0, 1) - x
    for _ in range(p.adv_steps):
        rho.requires_grad_(True)
        g = torch.autograd.grad(F.cross_entropy(model(x + rho), y), rho)[0]
        rho = sign_step(rho.detach(), -g, p.adv_step_size, x, p.rho)  # ascent: a descent step on -g
    model.train(was_training)
    return rho.detach()


@POISONS.register("rem", "robust error-minimizing noise (Fu et al. 2022): EM against an adversarially "
                  "trained crafting model (ρ_a 4/255), EOT, l-inf 8/255", REMParams)
def craft_rem(ctx: CraftContext, p: REMParams) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive(ctx.seed, "rem", "noise"))
    dev, x, y = ctx.device, ctx.x, ctx.y
    model = crafting_model(ctx, "rem")
    opt = sgd(model, ctx)
    stream = BatchStream(len(x), ctx.train.batch_size, gen)
    delta = uniform_init(x.shape, p.epsilon, gen)
    delta = perturbed_images(x, delta) - x

    def adv_ce(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(m(xb + adversarial(m, xb, yb, p, gen)), yb)

    for _ in progress(range(p.rounds), desc="rem", unit="round"):
        for _ in range(p.model_steps):
            idx = next(stream)
            model_step(model, opt, perturbed_images(x[idx], delta[idx]), y[idx], gen, ctx.train.flip, adv_ce)
        model.eval()
        for idx in batches(len(x), p.craft_batch, gen):
            xb, yb, db = x[idx].to(dev), y[idx].to(dev), delta[idx].to(dev)
            for _ in range(p.pgd_steps):
                db = db.detach().requires_grad_(True)
                loss = 0.0
                for _ in range(p.eot):
                    xa = flip_crop(perturbed_images(xb, db), gen, ctx.train.flip, p.crop)
                    loss = loss + F.cross_entropy(model(xa + adversarial(model, xa, yb, p, gen)), yb)
                g = torch.autograd.grad(loss / p.eot, db)[0]
                db = sign_step(db.detach(), g, p.step_size, xb, p.epsilon)
            delta[idx] = db.cpu()
    return release(x, delta, p.norm, p.epsilon)
