"""`checkerboard`: a class-wise random checkerboard, a model-free shortcut poison.

The image is cut into square cells (`cell` pixels on a 32-pixel side, scaled with the image side,
at least 1); each class draws one sign per cell and channel, and every image of the class gets
+a or -a on each cell accordingly, a = epsilon rounded down to the 8-bit grid (so storage
keeps the budget). The pattern depends only on the class, so a model
can learn the label from it instead of from the image: the shortcut unlearnable examples exploit.

Registering it is the same as for a built-in poison: a Params dataclass subclassing PoisonParams
(its norm, budget and validation) and a craft function decorated with `POISONS.register`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import math

import torch

from attacks.base import POISONS, STORAGE_LEVELS, CraftContext, PoisonParams, release
from certify.errors import UserError
from certify.validation import check_at_least, check_at_most

REFERENCE_SIDE = 32  # `cell` is given on a 32-pixel side (CIFAR-10) and scaled with the image


@dataclass
class CheckerboardParams(PoisonParams):
    """l-inf budget `epsilon` (default 8/255) and the cell side `cell` on a 32-pixel side."""
    norm: ClassVar[str] = "linf"
    epsilon: float = 8 / 255
    cell: int = 4

    def validate(self, where: str) -> None:
        check_at_least(where, 1 / STORAGE_LEVELS, epsilon=self.epsilon)  # one 8-bit level at least
        check_at_most(where, 1.0, epsilon=self.epsilon)
        if isinstance(self.cell, bool) or not isinstance(self.cell, int) or self.cell < 1:
            raise UserError(f"{where}: cell must be an integer >= 1 (pixels on a 32-pixel side), got {self.cell!r}")


def cell_side(cell: int, side: int) -> int:
    """The cell side on an image side of `side` pixels (`cell` is given on a 32-pixel side)."""
    return max(1, min(side, round(cell * side / REFERENCE_SIDE)))


def class_patterns(num_classes: int, shape: tuple[int, ...], cell: int, epsilon: float,
                   gen: torch.Generator) -> torch.Tensor:
    """K x C x H x W patterns of +-a (a: epsilon on the 8-bit grid, rounded down), constant on each cell."""
    amplitude = math.floor(epsilon * STORAGE_LEVELS + 1e-9) / STORAGE_LEVELS
    c, h, w = shape
    ch, cw = cell_side(cell, h), cell_side(cell, w)
    signs = torch.randint(0, 2, (num_classes, c, -(-h // ch), -(-w // cw)), generator=gen) * 2 - 1
    cells = signs.repeat_interleave(ch, 2).repeat_interleave(cw, 3)[:, :, :h, :w]
    return cells.to(torch.float32) * amplitude


@POISONS.register("checkerboard", "class-wise random checkerboard: +-8/255 per cell and channel, one pattern "
                  "per class (model-free; the example plugin)", CheckerboardParams)
def craft_checkerboard(ctx: CraftContext, p: CheckerboardParams) -> torch.Tensor:
    gen = torch.Generator().manual_seed(ctx.seed)
    patterns = class_patterns(ctx.num_classes, tuple(ctx.x.shape[1:]), p.cell, p.epsilon, gen)
    return release(ctx.x, patterns.to(ctx.x.device)[ctx.y.to(ctx.x.device)], p.norm, p.epsilon)
