"""CutMix (Yun et al., 2019) with beta = 1, through torchvision.transforms.v2.CutMix, soft labels.

Seeded per batch from the training generator, with soft labels and their loss: the mixing defense
it shares with MixUp (`defenses/_common.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

from certify.validation import check_positive
from defenses._common import mixing_defense
from defenses.base import DEFENSES, Defense


@dataclass
class CutMixParams:
    """Published: alpha = 1 (lambda ~ Beta(1, 1))."""
    alpha: float = 1.0

    def validate(self, where: str) -> None:
        check_positive(where, alpha=self.alpha)


@DEFENSES.register("cutmix", "CutMix (beta = 1) with soft labels", CutMixParams)
def make_cutmix(p: CutMixParams) -> Defense:
    return mixing_defense("cutmix", "CutMix", p.alpha)
