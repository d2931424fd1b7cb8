"""Random noise, the no-protection controls: sample-wise and class-wise uniform noise in [-eps, eps]."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from attacks.base import POISONS, CraftContext, PoisonParams, release


@dataclass
class RandomParams(PoisonParams):
    """Published: eps = 8/255, uniform per pixel; sample-wise acc ~90 % on CIFAR-10 (ResNet-18)."""
    uses_model: ClassVar[bool] = False


@POISONS.register("random", "sample-wise uniform noise in [-8/255, 8/255]: the no-protection control",
                  RandomParams)
def craft_random(ctx: CraftContext, p: RandomParams) -> torch.Tensor:
    g = torch.Generator().manual_seed(ctx.seed)
    delta = (torch.rand(ctx.x.shape, generator=g) * 2 - 1) * p.epsilon
    return release(ctx.x, delta, p.norm, p.epsilon)


@POISONS.register("random-classwise", "one uniform noise image in [-8/255, 8/255] per class "
                  "(a shortcut that early stopping defeats)", RandomParams)
def craft_random_classwise(ctx: CraftContext, p: RandomParams) -> torch.Tensor:
    g = torch.Generator().manual_seed(ctx.seed)
    per_class = (torch.rand((ctx.num_classes,) + tuple(ctx.x.shape[1:]), generator=g) * 2 - 1) * p.epsilon
    return release(ctx.x, per_class[ctx.y], p.norm, p.epsilon)
