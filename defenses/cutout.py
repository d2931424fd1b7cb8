"""Cutout (DeVries & Taylor, 2017): one square hole of zeros per training image, per batch.

Published: one 16-px hole on 32 x 32 CIFAR images, centre uniform over the image, clipped at the
border. The hole scales with the image: side = round(size * H / 32) x round(size * W / 32), >= 1 px.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from certify.errors import UserError
from defenses.base import DEFENSES, Defense


@dataclass
class CutoutParams:
    """Published: one 16-px hole at 32 x 32."""
    size: int = 16  # hole side at 32 x 32 pixels
    reference: int = 32  # the image side `size` refers to

    def validate(self, where: str) -> None:
        for name, v in (("size", self.size), ("reference", self.reference)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{where}: {name} must be an integer >= 1, got {v!r}")


def cutout(x: torch.Tensor, gen: torch.Generator, size: int = 16, reference: int = 32) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = max(1, round(size * h / reference)), max(1, round(size * w / reference))
    cy = torch.randint(0, h, (n,), generator=gen).view(n, 1, 1)
    cx = torch.randint(0, w, (n,), generator=gen).view(n, 1, 1)
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    top, left = cy - sh // 2, cx - sw // 2
    hole = (rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw)  # n x h x w
    return x.masked_fill(hole.unsqueeze(1).to(x.device), 0.0)


@DEFENSES.register("cutout", "Cutout: one 16-px hole per image at 32 x 32 (scaled with image size)",
                   CutoutParams)
def make_cutout(p: CutoutParams) -> Defense:
    return Defense("cutout", batch_transform=lambda xb, yb, gen: (cutout(xb, gen, p.size, p.reference), yb))
