"""REM, robust error-minimizing noise (Fu et al., ICLR 2022), sample-wise.

Like EM, but the crafting model is trained adversarially against a defensive perturbation ρ with
‖ρ‖∞ ≤ ρ_a (PGD that maximizes the cross-entropy), and δ minimizes the loss of that adversarial
example, averaged over EOT random augmentations (flip and crop) of x + δ:
    min_δ E_aug max_{‖ρ‖≤ρ_a} CE(f(aug(x + δ) + ρ), y).

The loop follows the reference (generate_robust_em.py with perturb-freq 1): for each of
`model_steps` batches, the batch's δ is re-crafted from a fresh uniform start by `pgd_steps` signed
steps on the EOT loss (the model in eval mode), then the crafting model takes one step on the
adversarial example of aug(x + δ); the lr is multiplied by `lr_decay` every `lr_decay_every` steps.
At the end every δ is regenerated, the same way, with the final model.

Remaining differences from the reference:
- the crafting model is the run's architecture with the run's lr, momentum, weight decay and
  batch size (the reference: ResNet-18, lr 0.1, wd 5e-4, batch 128);
- δ steps keep x + δ in [0, 1] (the reference clips x + δ only inside the augmentation), and the
  final δ is regenerated in batches of `craft_batch` (the reference: its training batches);
- each pass over the data ends with a partial batch (the reference drops it);
- the CPU profile `quick` scales the schedule down (REMParams); `--profile reference` restores it.
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

    Published (gen_rem.sh, CIFAR-10, ResNet-18): eps 8/255, ρ_a = 4/255 (10 PGD steps of 0.8/255 for
    ρ), δ: 10 PGD steps of 1.6/255 from a random start, EOT over 5 augmentations (crop 4 + flip),
    5000 model steps (about 13 epochs of CIFAR-10 at batch 128), lr × 0.1 every 2000 steps; all of it
    under `--profile reference`.
    CPU default `quick` (cifar10-mini, cnn): 200 model steps (5 epochs of 5,000 images at batch 128),
    δ from 3 steps of 1.6/255 with EOT 2, ρ from 1 step of 4/255 from a random start, lr × 0.1 every
    80 steps (the reference's 2/5 of the run). Crafting a batch's δ costs pgd_steps × eot × (adv_steps + 1)
    forward-backward passes, 12 here against the reference's 550.
    """
    dataset_defaults: ClassVar[dict[str, dict]] = {
        "digits": {"model_steps": 3, "pgd_steps": 2, "eot": 1, "adv_steps": 1, "crop": 1, "lr_decay_every": 2}}
    profile_defaults: ClassVar[dict[str, dict]] = {
        "reference": {"model_steps": 5000, "lr_decay_every": 2000, "pgd_steps": 10, "eot": 5, "adv_steps": 10,
                      "adv_step_size": 0.8 / 255}}
    rho: float = 4 / 255  # ρ_a: the defensive (adversarial-training) radius
    adv_steps: int = 1  # PGD steps for ρ (published 10)
    adv_step_size: float = 4 / 255  # published 0.8/255 with 10 steps
    model_steps: int = 200  # adversarial-training batches of the crafting model (published 5000)
    lr_decay: float = 0.1
    lr_decay_every: int = 80  # published 2000 (of 5000)
    pgd_steps: int = 3  # signed steps on δ per crafting of a batch (published 10)
    step_size: float = 1.6 / 255
    eot: int = 2  # augmentations averaged per δ step (published 5)
    crop: int = 4  # random-crop padding in pixels of EOT and of the model's training (0: flip only)
    craft_batch: int = 512  # images per batch of the final regeneration

    def validate(self, where: str) -> None:
        super().validate(where)
        check_int_positive(where, model_steps=self.model_steps, lr_decay_every=self.lr_decay_every,
                           pgd_steps=self.pgd_steps, eot=self.eot, craft_batch=self.craft_batch)
        check_positive(where, epsilon=self.epsilon, step_size=self.step_size, lr_decay=self.lr_decay)
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


def recraft(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, p: REMParams, gen: torch.Generator,
            flip: bool) -> torch.Tensor:
    """A batch's δ made afresh (the reference's RobustMinimaxPGDDefender): a uniform start in the
    ε-ball, then `pgd_steps` signed descent steps on the EOT mean of the adversarial loss, eval mode."""
    model.eval()
    db = perturbed_images(xb, uniform_init(xb.shape, p.epsilon, gen).to(xb.device)) - xb
    for _ in range(p.pgd_steps):
        db = db.detach().requires_grad_(True)
        loss = 0.0
        for _ in range(p.eot):
            xa = flip_crop(perturbed_images(xb, db), gen, flip, p.crop)
            loss = loss + F.cross_entropy(model(xa + adversarial(model, xa, yb, p, gen)), yb)
        g = torch.autograd.grad(loss / p.eot, db)[0]
        db = sign_step(db.detach(), g, p.step_size, xb, p.epsilon)
    return db.detach()


def craft_rem_delta(ctx: CraftContext, p: REMParams) -> tuple[torch.Tensor, nn.Module]:
    """δ of REM (every image's, regenerated with the final model) and that final crafting model."""
    gen = torch.Generator().manual_seed(derive(ctx.seed, "rem", "noise"))
    dev, x, y, flip = ctx.device, ctx.x, ctx.y, ctx.train.flip
    model = crafting_model(ctx, "rem")
    opt = sgd(model, ctx)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=p.lr_decay_every, gamma=p.lr_decay)
    stream = BatchStream(len(x), ctx.train.batch_size, gen)

    def adv_ce(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(m(xb + adversarial(m, xb, yb, p, gen)), yb)

    for _ in progress(range(p.model_steps), desc="rem", unit="step"):
        idx = next(stream)
        xb, yb = x[idx].to(dev), y[idx].to(dev)
        db = recraft(model, xb, yb, p, gen, flip)
        # the reference trains on aug(x + δ) with its full train augmentation: crop here, flip in model_step
        model_step(model, opt, flip_crop(perturbed_images(xb, db), gen, False, p.crop), yb, gen, flip, adv_ce)
        sched.step()
    delta = torch.empty_like(x)
    for idx in batches(len(x), p.craft_batch):
        delta[idx] = recraft(model, x[idx].to(dev), y[idx].to(dev), p, gen, flip).cpu()
    model.eval()
    return delta, model


@POISONS.register("rem", "robust error-minimizing noise (Fu et al. 2022): EM against an adversarially "
                  "trained crafting model (ρ_a 4/255), EOT, l-inf 8/255", REMParams)
def craft_rem(ctx: CraftContext, p: REMParams) -> torch.Tensor:
    delta, _ = craft_rem_delta(ctx, p)
    return release(ctx.x, delta, p.norm, p.epsilon)
