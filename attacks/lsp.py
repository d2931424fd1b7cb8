"""LSP, linearly separable synthetic patches (Yu et al., KDD 2022): a model-free class-wise shortcut.

Each class gets one synthetic pattern: the image is cut into patches (8x8 on a 32x32 image, scaled
with the image size), every patch is filled with one class-specific Gaussian random colour (a small
Gaussian grid upsampled by nearest neighbour), and the pattern is scaled to the l2 budget, added to
every image of the class and clipped to [0, 1]. No model is needed.

The published budget is an l2 norm of about 1.3 on CIFAR-10, i.e. the l2 norm of a uniform 6/255
per-pixel change over 3x32x32 values (6/255 * sqrt(3072) = 1.30). `epsilon` is that value *at the
reference size 3x32x32*; with `scale_to_size` (the default) the budget actually applied to C x H x W
images is `epsilon * sqrt(C*H*W / 3072)`, the same per-pixel strength (8x8 digits: 0.188, 28x28
MNIST: 0.66, 64x64 RGB: 2.6). `epsilon_for(shape)` gives the applied budget; it is the number the
released data is measured against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from attacks.base import POISONS, CraftContext, PoisonParams, check_budget, per_image_norm, quantize, release
from certify.errors import UserError
from certify.validation import check_positive

REFERENCE_DIMS = 3 * 32 * 32  # CIFAR-10: the size the published budgets refer to
REFERENCE_SIDE = 32


def scaled_l2_budget(epsilon: float, shape, scale_to_size: bool) -> float:
    """`epsilon` given at 3x32x32, scaled to C x H x W by sqrt(C*H*W / 3072) (or used as is)."""
    if not scale_to_size:
        return float(epsilon)
    c, h, w = (int(s) for s in shape)
    return float(epsilon) * math.sqrt(c * h * w / REFERENCE_DIMS)


def fit_l2_on_grid(patterns: torch.Tensor, budget: float) -> torch.Tensor:
    """Scale each pattern (K x C x H x W) to l2 = budget and round it to the 1/255 storage grid,
    shrinking until the *rounded* pattern is within the budget.

    Because clean images lie on the grid, `release` then adds exactly this pattern (no per-image
    re-rounding), so every image of a class gets the same delta before clipping, and clipping only
    lowers |delta| per value, so the released l2 stays <= budget.
    """
    norms = per_image_norm(patterns, "l2").clamp_min(1e-12)
    scaled = patterns * (budget / norms).view(-1, 1, 1, 1)
    out = quantize(scaled)
    for _ in range(60):
        n = per_image_norm(out, "l2")
        over = n > budget
        if not over.any():
            return out
        # shrink the unrounded pattern a little and round again
        scaled[over] = scaled[over] * (budget / n[over] * 0.995).view(-1, 1, 1, 1)
        out[over] = quantize(scaled[over])
    raise UserError(f"cannot fit a class pattern within the l2 budget {budget:.4f} on the 8-bit grid")


@dataclass
class LSPParams(PoisonParams):
    """Published (Yu et al., KDD 2022, CIFAR-10): 8x8 patches, l2 ~ 1.3 (= 6/255 per pixel over
    3x32x32); acc ~ 19 % (ResNet-18). `epsilon` is the l2 budget at 3x32x32; see the module doc for
    how it scales with the image size (`scale_to_size`). `patch` is the patch side on a 32-pixel
    side and scales with the image (8 on 32x32, 2 on 8x8, 7 on 28x28, at least 1)."""
    norm: ClassVar[str] = "l2"
    epsilon: float = 1.3
    patch: int = 8
    scale_to_size: bool = True

    def validate(self, where: str) -> None:
        check_positive(where, epsilon=self.epsilon)
        if isinstance(self.patch, bool) or not isinstance(self.patch, int) or self.patch < 1:
            raise UserError(f"{where}: patch must be an integer >= 1 (pixels on a 32-pixel side), got {self.patch!r}")
        if not isinstance(self.scale_to_size, bool):
            raise UserError(f"{where}: scale_to_size must be true or false, got {self.scale_to_size!r}")

    def epsilon_for(self, shape) -> float:
        """The l2 budget applied to images of shape C x H x W."""
        return scaled_l2_budget(self.epsilon, shape, self.scale_to_size)


def patch_side(patch: int, side: int) -> int:
    """The patch side on an image side of `side` pixels (`patch` is given on a 32-pixel side)."""
    return max(1, min(side, int(round(patch * side / REFERENCE_SIDE))))


def lsp_patterns(num_classes: int, shape, patch: int, gen: torch.Generator) -> torch.Tensor:
    """One unscaled pattern per class, K x C x H x W: a Gaussian colour per patch, upsampled."""
    c, h, w = (int(s) for s in shape)
    ph, pw = patch_side(patch, h), patch_side(patch, w)
    gh, gw = -(-h // ph), -(-w // pw)
    grid = torch.randn((num_classes, c, gh, gw), generator=gen, dtype=torch.float64)
    up = F.interpolate(grid, scale_factor=(ph, pw), mode="nearest")
    return up[:, :, :h, :w].to(torch.float32).contiguous()


@POISONS.register("lsp", "linearly separable synthetic patches: one random-colour patch pattern per class, "
                  "l2 ~ 1.3 at 32x32 (model-free)", LSPParams)
def craft_lsp(ctx: CraftContext, p: LSPParams) -> torch.Tensor:
    shape = tuple(ctx.x.shape[1:])
    budget = p.epsilon_for(shape)
    gen = torch.Generator().manual_seed(ctx.seed)
    patterns = fit_l2_on_grid(lsp_patterns(ctx.num_classes, shape, p.patch, gen), budget)
    delta = patterns.to(ctx.x.device)[ctx.y.to(ctx.x.device)]
    released = quantize(release(ctx.x, delta, p.norm, budget))  # snapped: x + delta in float32 can be 1 ulp off the grid
    check_budget("lsp", ctx.x, released, p.norm, budget)
    return released
