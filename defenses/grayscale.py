"""ISS grayscale squeezing (Liu et al., ICML 2023): every training image converted to grayscale.

ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B), rounded to the 1/255 grid and replicated on the three
channels so the model's input shape is unchanged. One-channel images are already gray: identity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from certify.errors import UserError
from defenses.base import DEFENSES, Defense

LUMA = (0.299, 0.587, 0.114)


@dataclass
class GrayscaleParams:
    """No parameters: ISS uses the standard luma conversion."""

    def validate(self, where: str) -> None:
        pass


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"defense grayscale: needs N x C x H x W images with 1 or 3 channels, got {tuple(x.shape)}")
    if x.shape[1] == 1:
        return x.clone()
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    luma = torch.round((x * w).sum(1, keepdim=True) * 255).clamp(0, 255) / 255
    return luma.expand_as(x).contiguous()


@DEFENSES.register("grayscale", "ISS: grayscale conversion (ITU-R 601 luma) of every training image",
                   GrayscaleParams)
def make_grayscale(p: GrayscaleParams) -> Defense:
    return Defense("grayscale", prepare=lambda x, y, seed: (to_grayscale(x), y))
