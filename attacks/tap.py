"""TAP, targeted adversarial poisoning (Fowl et al., NeurIPS 2021).

Train a clean crafting model with the run's recipe, then craft δ as a targeted adversarial example
toward class (y + 1) mod C: signed PGD steps that *minimize* the cross-entropy to the target class,
within ‖δ‖∞ ≤ ε, with a fresh random flip each step when the run flips (a cheap stand-in for the
reference's differentiable augmentation).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from attacks.base import POISONS, CraftContext, PoisonParams, release, sign_step
from attacks._common import batches, check_int_positive, crafting_model
from certify.progress import progress
from certify.seeding import derive
from certify.training import flip_crop, train
from certify.validation import check_positive


@dataclass
class TAPParams(PoisonParams):
    """TAP, l-inf.

    Published (CIFAR-10, ResNet-18): eps 8/255, a fully trained clean model, 250 PGD steps toward
    (y + 1) mod C. CPU defaults (cifar10-mini, cnn): the run's recipe for 10 epochs, 20 steps of 1/255.
    """
    dataset_defaults: ClassVar[dict[str, dict]] = {"digits": {"train_epochs": 2, "steps": 5}}
    train_epochs: int = 10  # clean crafting model epochs (the run's lr, batch, flip otherwise)
    steps: int = 20  # published 250
    step_size: float = 1 / 255
    craft_batch: int = 512

    def validate(self, where: str) -> None:
        super().validate(where)
        check_int_positive(where, train_epochs=self.train_epochs, steps=self.steps, craft_batch=self.craft_batch)
        check_positive(where, epsilon=self.epsilon, step_size=self.step_size)


@POISONS.register("tap", "targeted adversarial poisoning (Fowl et al. 2021): PGD toward class (y+1) mod C "
                  "on a clean model, l-inf 8/255", TAPParams)
def craft_tap(ctx: CraftContext, p: TAPParams) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive(ctx.seed, "tap", "noise"))
    dev, x, y = ctx.device, ctx.x, ctx.y
    model = crafting_model(ctx, "tap")
    cfg = dataclasses.replace(ctx.train, epochs=p.train_epochs)
    train(model, x, y, cfg, derive(ctx.seed, "tap", "train"), desc="tap clean model")
    model.eval()
    target = (y + 1) % ctx.num_classes
    delta = torch.zeros_like(x)
    for idx in progress(batches(len(x), p.craft_batch), desc="tap", unit="batch"):
        xb, tb, db = x[idx].to(dev), target[idx].to(dev), delta[idx].to(dev)
        for _ in range(p.steps):
            db = db.detach().requires_grad_(True)
            xin = flip_crop((xb + db).clamp(0, 1), gen, ctx.train.flip, 0)
            g = torch.autograd.grad(F.cross_entropy(model(xin), tb), db)[0]
            db = sign_step(db.detach(), g, p.step_size, xb, p.epsilon)
        delta[idx] = db.cpu()
    return release(x, delta, p.norm, p.epsilon)
