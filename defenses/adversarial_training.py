"""Madry PGD adversarial training (`at8`, `at4`): train on l-inf PGD examples made on the fly.

Published settings (Madry et al. 2018; the UE literature's AT baseline): random uniform start in the
eps-ball, eps = 8/255 with 10 steps of 2/255 (`at8`) or eps = 4/255 with 10 steps of 1/255 (`at4`),
100 epochs on CIFAR. The attack runs with the model in train mode (as Madry's code does: BatchNorm
normalises with the batch's own statistics), but its forward passes never move the BN running
statistics: they are saved before the attack and restored after, so only the one training forward
pass on the adversarial batch updates them, exactly as in plain training.

Cost: `steps` extra forward+backward passes per batch. A CPU run may lower `steps` (and raise
`step` so that steps * step still covers ~2 eps), e.g. `defense_params: {at8: {steps: 2, step: 8/255}}`
(at4: step 4/255): 2 steps of eps from the random start (2 eps, as the published 10 x eps/4 covers
2.5 eps), 3 forward+backward passes per batch instead of 11; bench/defenses_check.py measured ~3x
plain training per epoch (10 steps: ~11x).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from certify.errors import UserError
from certify.validation import check_positive
from defenses.base import DEFENSES, Defense


@dataclass
class AT8Params:
    """Published: eps 8/255, 10 steps of 2/255, random start."""
    epsilon: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10
    random_start: bool = True

    def validate(self, where: str) -> None:
        check_positive(where, epsilon=self.epsilon, step=self.step)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise UserError(f"{where}: steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.random_start, bool):
            raise UserError(f"{where}: random_start must be true or false, got {self.random_start!r}")


@dataclass
class AT4Params(AT8Params):
    """Published: eps 4/255, 10 steps of 1/255, random start."""
    epsilon: float = 4 / 255
    step: float = 1 / 255


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
            for b in m.buffers()]


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, step: float, steps: int,
             gen: torch.Generator, random_start: bool = True) -> torch.Tensor:
    """The l-inf PGD example that *raises* the loss, in [0, 1] and within epsilon of x.

    Runs in the model's current mode; BatchNorm running statistics (and the batch counter) are
    restored afterwards, and no parameter gradient is accumulated.
    """
    saved = [b.clone() for b in _bn_buffers(model)]
    x = x.detach()
    if random_start:
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * epsilon
        adv = (x + noise.to(x.device, x.dtype)).clamp(0, 1)
    else:
        adv = x.clone()
    try:
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), y)
            (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                adv = adv + step * grad.sign()
                adv = torch.min(torch.max(adv, x - epsilon), x + epsilon).clamp(0, 1)
    finally:
        with torch.no_grad():
            for b, s in zip(_bn_buffers(model), saved):
                b.copy_(s)
    return adv.detach()


def _make(p: AT8Params) -> Defense:
    def loss_fn(model, xb, yb, gen):
        adv = pgd_linf(model, xb, yb, p.epsilon, p.step, p.steps, gen, p.random_start)
        return F.cross_entropy(model(adv), yb)

    return loss_fn


@DEFENSES.register("at8", "Madry PGD adversarial training, l-inf 8/255, 10 steps of 2/255 (expensive)",
                   AT8Params)
def make_at8(p: AT8Params) -> Defense:
    return Defense("at8", loss_fn=_make(p))


@DEFENSES.register("at4", "Madry PGD adversarial training, l-inf 4/255, 10 steps of 1/255 (expensive)",
                   AT4Params)
def make_at4(p: AT4Params) -> Defense:
    return Defense("at4", loss_fn=_make(p))
