"""AR, autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022): a model-free shortcut.

An AR process of one channel is a 3x3 causal filter: in raster order every pixel is the linear
combination of the 8 already-generated pixels of its 3x3 window (rows i-2..i, columns j-2..j, the
pixel itself excluded), started from a Gaussian image whose first two rows and columns are kept.
A class's process has one such filter per channel, drawn Gaussian and normalised to sum to 1.

As published (the authors' `autoregressive_param_finder.py` and `create_ar_poisons_3channel.py`):
- The filters are chosen by a greedy search over random candidates. A candidate is *stable* if
  none of its 3 trial samples (generated on (H + crop) x (W + crop), the first `crop` rows and
  columns dropped) has an l2 norm above `max_norm` or a non-finite value. A stable candidate is
  kept if it is *well separated*: every already-kept process's matched filter (its 3x3 filter with
  -1 at the pixel, summed over channels, which is 0 on that process's own samples) responds to the
  candidate's last sample, scaled to l2 = 1, with at least `min_response` (the sum of the ReLU of
  the filter's output). The search stops at one process per class.
- Every image gets a fresh sample of its class's process (its own random start), cropped, scaled
  to the l2 budget, added to the image and clipped to [0, 1].
The only departures: the search is seeded from the poison's seed, candidates are drawn in batches
(the same greedy order), and the release is rounded to 8 bits as the reference's export does.

The published budget is l2 = 1.0 on CIFAR-10 (3x32x32). Like LSP, `epsilon` is given at that
reference size and, with `scale_to_size` (the default), scaled by sqrt(C*H*W / 3072) to the image
size; `epsilon_for(shape)` is the budget actually applied and measured. `scale_to_size` scales the
search's thresholds, also given at 3x32x32, by the same factor: `max_norm` keeps the per-value size,
and a unit-norm sample's filter response was measured to follow it (the median response of a stable
sample to another random stable process's filter: 6.1 at 3x32x32; 2.9, 1.1, 3.0 and 3.2 at 1x32x32,
1x8x8, 1x28x28 and 3x16x16, within 25 % of 6.1 times the factor).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from attacks.base import POISONS, CraftContext, PoisonParams, check_budget, release
from attacks.lsp import fit_l2_on_grid, scaled_l2_budget
from certify.errors import UserError
from certify.validation import MAX_CROP, check_at_most, check_nonnegative, check_positive

WINDOW = 3  # causal 3x3 window: 8 neighbours
TRIALS = 3  # samples a candidate must generate without diverging (published)
BATCH = 4096  # candidates drawn at a time
MAX_CANDIDATES = 1_000_000  # the search gives up after this many (published)
SCREEN_SIDES = (4, 12)  # corner sizes (past the crop) checked before the whole sample
CHUNK = 8192  # sequences generated at a time (bounds the skewed copy's memory)
# the window's neighbours (row, column offsets) in the order of a filter's 8 coefficients
OFFSETS = [(dr, dc) for dr in range(1 - WINDOW, 1) for dc in range(1 - WINDOW, 1)][:-1]


@dataclass
class ARParams(PoisonParams):
    """Published (Sandoval-Segura et al., NeurIPS 2022, CIFAR-10): one 3x3 AR filter per class and
    channel, searched with max_norm 50 and min_response 10 (their CIFAR-100 set used min_response 3,
    the default on cifar100), crop 4, l2 = 1.0; acc ~ 12 % (ResNet-18). `epsilon`, `max_norm` and `min_response` are given at
    3x32x32 and scale with the image size (`scale_to_size`, see the module doc). `crop`: start-up rows
    and columns generated and then dropped."""
    norm: ClassVar[str] = "l2"
    uses_model: ClassVar[bool] = False
    dataset_defaults: ClassVar[dict[str, dict]] = {"cifar100": {"min_response": 3.0}}
    epsilon: float = 1.0
    crop: int = 4
    scale_to_size: bool = True
    max_norm: float = 50.0
    min_response: float = 10.0

    def validate(self, where: str) -> None:
        check_positive(where, epsilon=self.epsilon, max_norm=self.max_norm)
        check_nonnegative(where, min_response=self.min_response)
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 0:
            raise UserError(f"{where}: crop must be an integer >= 0 (start-up rows/columns to drop), got {self.crop!r}")
        check_at_most(where, MAX_CROP, crop=self.crop)
        if not isinstance(self.scale_to_size, bool):
            raise UserError(f"{where}: scale_to_size must be true or false, got {self.scale_to_size!r}")

    def epsilon_for(self, shape) -> float:
        """The l2 budget applied to images of shape C x H x W."""
        return scaled_l2_budget(self.epsilon, shape, self.scale_to_size)

    def thresholds_for(self, shape) -> tuple[float, float]:
        """(max_norm, min_response) of the filter search on images of shape C x H x W."""
        return (scaled_l2_budget(self.max_norm, shape, self.scale_to_size),
                scaled_l2_budget(self.min_response, shape, self.scale_to_size))


def ar_generate(coef: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Run the AR processes: coef n x 8, start n x H x W (its first 2 rows and columns are kept).

    Pixel (i, j) depends only on pixels of smaller i + j, so a whole anti-diagonal is computed at
    once (the same sums as raster order): on a skewed copy y[i, i + j] = x[i, j] an anti-diagonal
    is a column and each window neighbour a shifted slice of an earlier column."""
    out = torch.empty_like(start)
    for part in range(0, len(start), CHUNK):
        out[part:part + CHUNK] = _generate(coef[part:part + CHUNK], start[part:part + CHUNK])
    return out


def _generate(coef: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    n, h, w = start.shape
    k = WINDOW - 1
    rows = torch.arange(h).view(-1, 1)
    diag = rows + torch.arange(w).view(1, -1)
    y = start.new_zeros((h, h + w - 1, n))
    y[rows, diag] = start.permute(1, 2, 0)
    c = coef.t()
    for t in range(2 * k, h + w - 1):
        lo, hi = max(k, t - w + 1), min(h - 1, t - k)  # rows of the pixels on anti-diagonal t
        if lo > hi:
            continue
        acc = c[0] * y[lo - k:hi + 1 - k, t - 2 * k]
        for m, (dr, dc) in enumerate(OFFSETS[1:], 1):
            acc += c[m] * y[lo + dr:hi + 1 + dr, t + dr + dc]
        y[lo:hi + 1, t] = acc
    return y[rows, diag].permute(2, 0, 1)


def random_border(n: int, h: int, w: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of n start images of h x w: Gaussian first 2 rows (n x 2 x w) and the first 2
    columns below them (n x (h-2) x 2), the only start pixels a process keeps (the reference draws a
    whole Gaussian image and overwrites the rest)."""
    k = WINDOW - 1
    return (torch.randn((n, min(k, h), w), generator=gen),
            torch.randn((n, max(0, h - k), min(k, w)), generator=gen))


def start_image(top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The top-left h x w corner of the start images with border (top, left), zero inside."""
    k = top.shape[1]
    start = torch.zeros((len(top), h, w))
    start[:, :k, :] = top[:, :, :w]
    start[:, k:, :left.shape[2]] = left[:, :h - k]
    return start


def ar_samples(coef: torch.Tensor, shape, crop: int, gen: torch.Generator) -> torch.Tensor:
    """One unscaled sample per process, M x C x H x W, from coef M x C x 8 and a fresh Gaussian start."""
    m, (c, h, w) = len(coef), (int(s) for s in shape)
    start = start_image(*random_border(m * c, h + crop, w + crop, gen), h + crop, w + crop)
    x = ar_generate(coef.reshape(m * c, WINDOW * WINDOW - 1), start)
    return x.view(m, c, h + crop, w + crop)[:, :, crop:, crop:]


def stable_samples(coef: torch.Tensor, shape, crop: int, max_norm: float, gen: torch.Generator):
    """One trial of the stability test: (the stable candidates' indices, their samples, their l2 norms).

    A pixel depends only on the start pixels above and to its left, so a top-left corner generated
    alone equals that corner of the whole sample: a candidate whose corner already breaks the bound
    (a norm over part of the sample is at most the whole's) is dropped before the larger sizes."""
    m, (c, h, w) = len(coef), (int(s) for s in shape)
    top, left = (b.view(m, c, *b.shape[1:]) for b in random_border(m * c, h + crop, w + crop, gen))
    idx = torch.arange(m)
    for side in SCREEN_SIDES + (max(h, w),):
        sh, sw = min(h, side) + crop, min(w, side) + crop
        start = start_image(top[idx].flatten(0, 1), left[idx].flatten(0, 1), sh, sw)
        x = ar_generate(coef[idx].reshape(-1, WINDOW * WINDOW - 1), start)
        sample = x.view(len(idx), c, sh, sw)[:, :, crop:, crop:]
        norm = sample.flatten(1).norm(dim=1)
        ok = torch.isfinite(norm) & (norm <= max_norm)
        idx, sample, norm = idx[ok], sample[ok], norm[ok]
    return idx, sample, norm


def matched_filters(coef: torch.Tensor) -> torch.Tensor:
    """Conv weights A x C x 3 x 3: each process's filter with -1 at the pixel (0 on its own samples)."""
    return torch.cat([coef, -torch.ones(coef.shape[:2] + (1,))], 2).view(len(coef), -1, WINDOW, WINDOW)


def find_processes(num_classes: int, shape, p: ARParams, gen: torch.Generator) -> torch.Tensor:
    """The published greedy search: coefficients K x C x 8 of stable, well-separated processes."""
    c = int(shape[0])
    max_norm, min_response = p.thresholds_for(shape)
    kept: list[torch.Tensor] = []
    for _ in range(0, MAX_CANDIDATES, BATCH):
        coef = torch.randn((BATCH, c, WINDOW * WINDOW - 1), generator=gen)
        coef = coef / coef.sum(2, keepdim=True)
        for _ in range(TRIALS):  # every trial must stay bounded; most candidates fail the first
            keep, sample, norm = stable_samples(coef, shape, p.crop, max_norm, gen)
            coef = coef[keep]
        for b in range(len(coef)):
            if kept:
                last = (sample[b] / norm[b]).unsqueeze(0)
                response = F.relu(F.conv2d(last, matched_filters(torch.stack(kept)))).sum((2, 3))
                if float(response.min()) < min_response:
                    continue
            kept.append(coef[b])
            if len(kept) == num_classes:
                return torch.stack(kept)
    raise UserError(f"ar: found {len(kept)} of {num_classes} stable, well-separated AR processes in "
                    f"{MAX_CANDIDATES:,} candidates; lower min_response (now {p.min_response}) or raise max_norm")


@POISONS.register("ar", "autoregressive perturbations: per image a fresh sample of its class's AR process "
                  "(searched stable, separated 3x3 filters), l2 = 1.0 at 32x32 (model-free)", ARParams)
def craft_ar(ctx: CraftContext, p: ARParams) -> torch.Tensor:
    shape = tuple(ctx.x.shape[1:])
    budget = p.epsilon_for(shape)
    gen = torch.Generator().manual_seed(ctx.seed)
    coef = find_processes(ctx.num_classes, shape, p, gen)
    delta = fit_l2_on_grid(ar_samples(coef[ctx.y.cpu()], shape, p.crop, gen), budget)
    released = release(ctx.x, delta.to(ctx.x.device), p.norm, budget)
    check_budget("ar", ctx.x, released, p.norm, budget)
    return released
