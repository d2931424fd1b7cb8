"""`none`: the clean control. No perturbation; every stage runs on it so each poison has a clean twin."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from attacks.base import POISONS, CraftContext, PoisonParams
from certify.registry import CONTROL


@dataclass
class NoneParams(PoisonParams):
    norm: ClassVar[str] = "none"
    uses_model: ClassVar[bool] = False
    epsilon: float = 0.0


@POISONS.register(CONTROL, "the clean control: no perturbation (its protected model is the clean model)",
                  NoneParams, kind="control")
def craft_none(ctx: CraftContext, p: NoneParams) -> torch.Tensor:
    return ctx.x.clone()
