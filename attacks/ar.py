"""AR, autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022): a model-free class-wise shortcut.

Each class gets one random autoregressive (AR) filter per channel. A noise image is generated in
raster order: the first two rows and columns are a random Gaussian start-up patch, and every later
pixel is a fixed linear combination of the 8 already-generated neighbours of its causal 3x3 window
(the rows i-2..i and columns j-2..j, the pixel itself excluded). The coefficients are Gaussian,
normalised to sum to 1 (so the process neither dies out nor is smoothed to zero), and a filter is
kept only if the process it generates stays bounded on the image size (a sampled filter that blows
up is drawn again; "stable" here means max |value| <= 10 x the start-up patch's). The first `crop`
rows and columns (the start-up transient) are dropped, the image is scaled to the l2 budget, added
to every image of the class and clipped to [0, 1].

The published budget is l2 = 1.0 on CIFAR-10 (3x32x32). Like LSP, `epsilon` is given at that
reference size and, with `scale_to_size` (the default), scaled by sqrt(C*H*W / 3072) to the image
size; `epsilon_for(shape)` is the budget actually applied and measured.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from attacks.base import POISONS, CraftContext, PoisonParams, check_budget, quantize, release
from attacks.lsp import fit_l2_on_grid, scaled_l2_budget
from certify.errors import UserError
from certify.validation import MAX_CROP, check_at_most, check_positive

WINDOW = 3  # causal 3x3 window: 8 neighbours
GROWTH_LIMIT = 10.0  # a kept filter's process stays within this multiple of its start-up values
CANDIDATES = 32  # filters sampled per (class, channel) slot and round
MAX_ROUNDS = 50


@dataclass
class ARParams(PoisonParams):
    """Published (Sandoval-Segura et al., NeurIPS 2022, CIFAR-10): one 3x3-window AR process per
    class and channel, l2 = 1.0; acc ~ 12 % (ResNet-18). `epsilon` is the l2 budget at 3x32x32 and
    scales with the image size (`scale_to_size`, see the module doc). `crop`: start-up rows and
    columns generated and then dropped."""
    norm: ClassVar[str] = "l2"
    epsilon: float = 1.0
    crop: int = 4
    scale_to_size: bool = True

    def validate(self, where: str) -> None:
        check_positive(where, epsilon=self.epsilon)
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 0:
            raise UserError(f"{where}: crop must be an integer >= 0 (start-up rows/columns to drop), got {self.crop!r}")
        check_at_most(where, MAX_CROP, crop=self.crop)
        if not isinstance(self.scale_to_size, bool):
            raise UserError(f"{where}: scale_to_size must be true or false, got {self.scale_to_size!r}")

    def epsilon_for(self, shape) -> float:
        """The l2 budget applied to images of shape C x H x W."""
        return scaled_l2_budget(self.epsilon, shape, self.scale_to_size)


def ar_generate(coef: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Run the AR processes: coef n x 8, start n x Hc x Wc (its first 2 rows and columns are used)."""
    n, hc, wc = start.shape
    k = WINDOW - 1
    x = torch.zeros_like(start)
    x[:, :k, :] = start[:, :k, :]
    x[:, :, :k] = start[:, :, :k]
    for i in range(k, hc):
        for j in range(k, wc):
            win = x[:, i - k:i + 1, j - k:j + 1].reshape(n, WINDOW * WINDOW)[:, :-1]
            x[:, i, j] = (win * coef).sum(1)
    return x


def ar_patterns(num_classes: int, shape, crop: int, gen: torch.Generator) -> torch.Tensor:
    """One unscaled AR noise image per class, K x C x H x W (an independent stable filter per channel)."""
    c, h, w = (int(s) for s in shape)
    hc, wc = h + crop + WINDOW - 1, w + crop + WINDOW - 1
    slots = num_classes * c
    out = torch.zeros((slots, h, w), dtype=torch.float64)
    todo = torch.arange(slots)
    for _ in range(MAX_ROUNDS):
        if len(todo) == 0:
            break
        m = len(todo) * CANDIDATES
        coef = torch.randn((m, WINDOW * WINDOW - 1), generator=gen, dtype=torch.float64)
        coef = coef / coef.sum(1, keepdim=True)
        start = torch.randn((m, hc, wc), generator=gen, dtype=torch.float64)
        x = ar_generate(coef, start)
        edge = torch.cat([start[:, :WINDOW - 1, :].reshape(m, -1), start[:, :, :WINDOW - 1].reshape(m, -1)], 1)
        peak = x.abs().amax((1, 2))
        body = x[:, hc - h:, wc - w:]
        ok = torch.isfinite(peak) & (peak <= GROWTH_LIMIT * edge.abs().amax(1)) & (body.abs().amax((1, 2)) > 1e-6)
        ok = ok.view(len(todo), CANDIDATES)
        got = ok.any(1)
        first = ok.to(torch.int8).argmax(1)  # first accepted candidate of each slot
        pick = torch.arange(len(todo)) * CANDIDATES + first
        out[todo[got]] = body[pick[got]]
        todo = todo[~got]
    if len(todo):
        raise UserError(f"ar: could not draw a stable autoregressive filter for a {h}x{w} image "
                        f"in {MAX_ROUNDS * CANDIDATES} tries")
    return out.view(num_classes, c, h, w).to(torch.float32)


@POISONS.register("ar", "autoregressive perturbations: one random stable 3x3 AR noise image per class, "
                  "l2 = 1.0 at 32x32 (model-free)", ARParams)
def craft_ar(ctx: CraftContext, p: ARParams) -> torch.Tensor:
    shape = tuple(ctx.x.shape[1:])
    budget = p.epsilon_for(shape)
    gen = torch.Generator().manual_seed(ctx.seed)
    patterns = fit_l2_on_grid(ar_patterns(ctx.num_classes, shape, p.crop, gen), budget)
    delta = patterns.to(ctx.x.device)[ctx.y.to(ctx.x.device)]
    released = quantize(release(ctx.x, delta, p.norm, budget))  # snapped: x + delta in float32 can be 1 ulp off the grid
    check_budget("ar", ctx.x, released, p.norm, budget)
    return released
