"""OPS, the one-pixel shortcut (Wu et al., ICLR 2023): a model-free class-wise l0 poison.

For each class k, search a pixel position s and an extreme colour c (a corner of the RGB cube, or
0 / 1 for grayscale) maximising, as the reference's `pixel_search` (perturb.py) does,

    score(s, c) = mean_{i,ch} |c_ch - x_i[ch, s]| / std_{i,ch} |c_ch - x_i[ch, s]|

over the class's images i and the channels ch together (one pool of n·C absolute deviations;
population std), i.e. a colour that deviates most from the class's own values at s while those
deviations vary least; then set that pixel to that colour on every image of the class. Classes are
searched in label order and a (position, colour) pair already taken by an earlier class is skipped,
so the shortcut tells every class apart. The search is deterministic (no randomness, no model).
l0 = one pixel per image (fewer when an image already has the colour at that pixel).

Remaining differences from the reference: the std has 1e-6 added (the reference divides by a std
of 0, giving inf or nan, where every image of the class has the same value at s); ties go to the
first (colour, position) in order, where the reference takes the last of an unstable sort; any
number of classes and channels (the reference: 10 classes, RGB).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch

from attacks.base import POISONS, CraftContext, PoisonParams, check_budget, quantize, release
from certify.errors import UserError
from certify.validation import check_positive


@dataclass
class OPSParams(PoisonParams):
    """Published (Wu et al., ICLR 2023, CIFAR-10): one pixel per image (l0 = 1), an RGB-cube corner
    colour per class; acc ~ 37 % (ResNet-18), immune to l-inf adversarial training. `epsilon` is the
    l0 budget in pixels and must be 1: the attack perturbs exactly one pixel position per class."""
    norm: ClassVar[str] = "l0"
    uses_model: ClassVar[bool] = False
    epsilon: float = 1.0

    def validate(self, where: str) -> None:
        check_positive(where, epsilon=self.epsilon)
        if self.epsilon != 1:
            raise UserError(f"{where}: epsilon is the l0 budget in pixels and must be 1 "
                            f"(the one-pixel shortcut), got {self.epsilon!r}")


def corner_colours(channels: int) -> torch.Tensor:
    """All extreme colours: 2**C corners of the [0, 1]^C cube, P x C."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=channels)), dtype=torch.float32)


def ops_scores(xk: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """score[colour, position] for one class's images xk (n x C x H x W); positions flattened h*W + w."""
    n, c = xk.shape[:2]
    flat = xk.reshape(n, c, -1)  # n x C x P
    scores = []
    for col in colours.to(flat.device):
        d = (col.view(1, c, 1) - flat).abs()  # n x C x P: one pool of n·C deviations per position
        std, mean = torch.std_mean(d, (0, 1), unbiased=False)
        scores.append(mean / (std + 1e-6))
    return torch.stack(scores)  # colours x P


def ops_search(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[tuple[int, torch.Tensor]]:
    """The chosen (flat position, colour) of every class; a class without images gets position -1."""
    colours = corner_colours(x.shape[1])
    taken: set[tuple[int, int]] = set()
    chosen: list[tuple[int, torch.Tensor]] = []
    for k in range(num_classes):
        xk = x[y == k]
        if len(xk) == 0:
            chosen.append((-1, colours[0]))
            continue
        scores = ops_scores(xk, colours).cpu()
        for ci, pos in taken:
            scores[ci, pos] = -float("inf")
        best = int(torch.argmax(scores))  # first maximum in (colour, position) order: deterministic
        ci, pos = divmod(best, scores.shape[1])
        taken.add((ci, pos))
        chosen.append((pos, colours[ci]))
    return chosen


@POISONS.register("ops", "one-pixel shortcut: one extreme-colour pixel per class at its most "
                  "class-consistent position (l0 = 1, model-free)", OPSParams)
def craft_ops(ctx: CraftContext, p: OPSParams) -> torch.Tensor:
    x, y = ctx.x, ctx.y.to(ctx.x.device)
    n, c, h, w = x.shape
    target = x.clone().reshape(n, c, h * w)
    for k, (pos, colour) in enumerate(ops_search(x, y, ctx.num_classes)):
        if pos < 0:
            continue
        idx = (y == k).nonzero().flatten()
        target[idx, :, pos] = colour.to(x.device).view(1, c)
    delta = target.reshape(n, c, h, w) - x
    released = quantize(release(x, delta, p.norm, p.epsilon))  # snapped: x + delta in float32 can be 1 ulp off the grid
    check_budget("ops", x, released, p.norm, p.epsilon)
    return released
