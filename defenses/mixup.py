"""MixUp (Zhang et al., 2018) with beta = 1, through torchvision.transforms.v2.MixUp, soft labels.

Seeded per batch from the training generator, with soft labels and their loss: the mixing defense
it shares with CutMix (`defenses/_common.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

from certify.validation import check_positive
from defenses._common import mixing_defense
from defenses.base import DEFENSES, Defense


@dataclass
class MixUpParams:
    """Published: alpha = 1 (lambda ~ Beta(1, 1))."""
    alpha: float = 1.0

    def validate(self, where: str) -> None:
        check_positive(where, alpha=self.alpha)


@DEFENSES.register("mixup", "MixUp (beta = 1) with soft labels", MixUpParams)
def make_mixup(p: MixUpParams) -> Defense:
    return mixing_defense("mixup", "MixUp", p.alpha)
