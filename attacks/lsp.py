"""LSP, linearly separable synthetic perturbations (Yu et al., KDD 2022): a model-free shortcut.

As published (the authors' `synthetic_perturbations/cifar_train.py`): every image gets its own
point of a class-separated Gaussian mixture, drawn with scikit-learn's `make_classification`
(one cluster per class, every feature informative, `class_sep` 10, no label noise), with one
coordinate per patch and channel. The point is upsampled by filling each 8x8 patch of the image
with its coordinate (the patch side scales with the image: 8 on 32x32, 2 on 8x8), scaled to the l2
budget, added to the image and clipped to [0, 1]. So two images of a class get different
perturbations that a linear classifier separates by class. The only departures: the mixture is
seeded from the poison's seed; it holds as many points per class as the largest class needs (the
reference draws one point per training image and assumes balanced classes); the release is
rounded to 8 bits, not truncated.

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

import numpy as np
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


def fit_l2_on_grid(delta: torch.Tensor, budget: float) -> torch.Tensor:
    """Each image's delta (N x C x H x W) scaled to l2 = budget and rounded to the 1/255 storage grid,
    the unrounded delta shrunk until the *rounded* one is within the budget.

    Clean images lie on the grid, so `release` adds exactly this delta (shrinking a rounded delta
    by a percent would round back to it), and clipping only lowers |delta| per value.
    """
    scaled = delta * (budget / per_image_norm(delta, "l2").clamp_min(1e-12)).view(-1, 1, 1, 1)
    out = quantize(scaled)
    for _ in range(60):
        n = per_image_norm(out, "l2")
        over = n > budget
        if not over.any():
            return out
        scaled[over] = scaled[over] * (budget / n[over] * 0.995).view(-1, 1, 1, 1)
        out[over] = quantize(scaled[over])
    raise UserError(f"cannot fit a perturbation within the l2 budget {budget:.4f} on the 8-bit grid")


@dataclass
class LSPParams(PoisonParams):
    """Published (Yu et al., KDD 2022, CIFAR-10): 8x8 patches, l2 ~ 1.3 (= 6/255 per pixel over
    3x32x32), class_sep 10; acc ~ 19 % (ResNet-18). `epsilon` is the l2 budget at 3x32x32; see the
    module doc for how it scales with the image size (`scale_to_size`). `patch` is the patch side on
    a 32-pixel side and scales with the image (8 on 32x32, 2 on 8x8, 7 on 28x28, at least 1).
    `class_sep`: the distance of the class centres from the origin along each coordinate, in units
    of the within-class spread (scikit-learn's `make_classification`)."""
    norm: ClassVar[str] = "l2"
    uses_model: ClassVar[bool] = False
    epsilon: float = 1.3
    patch: int = 8
    scale_to_size: bool = True
    class_sep: float = 10.0

    def validate(self, where: str) -> None:
        check_positive(where, epsilon=self.epsilon, class_sep=self.class_sep)
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


def mixture_points(y: np.ndarray, num_classes: int, dims: int, class_sep: float, seed: int) -> np.ndarray:
    """One point of a class-separated Gaussian mixture per label in `y` (N x dims), each drawn from
    its label's cluster; the mixture has as many points per class as the largest class needs."""
    from sklearn.datasets import make_classification  # only loaded where LSP is crafted

    if num_classes > 2 ** dims:
        raise UserError(f"lsp: {num_classes} classes need at least {math.ceil(math.log2(num_classes))} "
                        f"patch values per image, the patch grid gives {dims}; lower patch")
    per_class = max(1, int(np.bincount(y, minlength=num_classes).max()))
    points, labels = make_classification(
        n_samples=num_classes * per_class, n_features=dims, n_informative=dims, n_redundant=0,
        n_repeated=0, n_classes=num_classes, n_clusters_per_class=1, class_sep=class_sep, flip_y=0.0,
        random_state=seed % 2**32)
    out = np.empty((len(y), dims))
    for k in range(num_classes):
        mine = np.flatnonzero(y == k)
        out[mine] = points[labels == k][:len(mine)]
    return out


def lsp_perturbations(y: torch.Tensor, num_classes: int, shape, p: LSPParams, seed: int) -> torch.Tensor:
    """One unscaled perturbation per image, N x C x H x W: its mixture point, one coordinate per
    patch and channel, upsampled by nearest neighbour."""
    c, h, w = (int(s) for s in shape)
    ph, pw = patch_side(p.patch, h), patch_side(p.patch, w)
    gh, gw = -(-h // ph), -(-w // pw)
    points = mixture_points(y.cpu().numpy(), num_classes, gh * gw * c, p.class_sep, seed)
    # the reference lays the coordinates out as rows x columns x channels
    grid = torch.from_numpy(points).view(len(y), gh, gw, c).permute(0, 3, 1, 2)
    up = F.interpolate(grid, scale_factor=(ph, pw), mode="nearest")
    return up[:, :, :h, :w].to(torch.float32).contiguous()


@POISONS.register("lsp", "linearly separable synthetic patches: per image a point of a class-separated "
                  "Gaussian mixture, upsampled to 8x8 patches, l2 ~ 1.3 at 32x32 (model-free)", LSPParams)
def craft_lsp(ctx: CraftContext, p: LSPParams) -> torch.Tensor:
    shape = tuple(ctx.x.shape[1:])
    budget = p.epsilon_for(shape)
    delta = fit_l2_on_grid(lsp_perturbations(ctx.y, ctx.num_classes, shape, p, ctx.seed), budget)
    released = release(ctx.x, delta.to(ctx.x.device), p.norm, budget)
    check_budget("lsp", ctx.x, released, p.norm, budget)
    return released
