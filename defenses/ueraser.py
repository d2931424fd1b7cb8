"""UEraser, light (Qin et al., 2023): train on the largest loss over K random strong augmentations.

Per image and per repeat (K = 5, UEraser-Max): plasma-like brightness and contrast (a smooth random
field, p = 0.5 each), channel shuffle (p = 0.5), horizontal flip (off for digits and MNIST, whose
classes a mirror changes) and random crop (padding 4 px at 32 px, scaled), then torchvision's
TrivialAugmentWide. The loss is the mean over images of the
maximum over the K repeats of the per-sample cross-entropy (all K copies go through the model in
one forward pass). Every random choice is drawn from the training generator; TrivialAugmentWide,
which draws from the global RNG, runs inside `torch.random.fork_rng` seeded from it, on groups of
`ta_group` images sharing one operation (per-image calls cost ~5 ms each on a CPU).
Cost: K forward+backward passes of the batch per step (~5x plain training).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from certify.errors import UserError
from certify.training import flip_crop
from defenses.base import DEFENSES, Defense


@dataclass
class UEraserParams:
    """Published (UEraser-Max): K = 5 repeats of plasma brightness/contrast, channel shuffle, TrivialAugment."""
    repeats: int = 5
    trivial_augment: bool = True
    ta_group: int = 16  # images sharing one TrivialAugment operation
    flip: bool = True  # random horizontal flip among the strong augmentations
    dataset_defaults: ClassVar[dict[str, dict]] = {"digits": {"flip": False}, "mnist": {"flip": False}}

    def validate(self, where: str) -> None:
        for name, v in (("repeats", self.repeats), ("ta_group", self.ta_group)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{where}: {name} must be an integer >= 1, got {v!r}")
        for name in ("trivial_augment", "flip"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{where}: {name} must be true or false, got {getattr(self, name)!r}")


def _field(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A smooth random field in about [-1, 1] (two octaves of upsampled uniform noise), n x 1 x h x w."""
    out = torch.zeros(n, 1, h, w)
    for cells, weight in ((2, 2 / 3), (4, 1 / 3)):
        coarse = torch.rand(n, 1, cells + 1, cells + 1, generator=gen) * 2 - 1
        out += weight * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
    return out


def _chance(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=gen) < p).view(n, 1, 1, 1)


def strong_augment(x: torch.Tensor, gen: torch.Generator, trivial_augment: bool = True,
                   ta_group: int = 16, flip: bool = True) -> torch.Tensor:
    """One random strong augmentation per image of x (N x C x H x W in [0, 1]), seeded by `gen`."""
    n, c, h, w = x.shape
    dev = x.device
    # plasma brightness: add a smooth field of random intensity
    amp = torch.rand(n, 1, 1, 1, generator=gen) * 0.5
    bright = (_field(n, h, w, gen) * amp * _chance(n, 0.5, gen)).to(dev)
    x = (x + bright).clamp(0, 1)
    # plasma contrast: scale around each image's mean by a smooth field in about [0.5, 1.5]
    amp = torch.rand(n, 1, 1, 1, generator=gen) * 0.5
    scale = (1 + _field(n, h, w, gen) * amp * _chance(n, 0.5, gen)).to(dev)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * scale + mean).clamp(0, 1)
    # channel shuffle
    if c > 1:
        perm = torch.argsort(torch.rand(n, c, generator=gen), dim=1)
        keep = ~_chance(n, 0.5, gen).view(n, 1)
        perm = torch.where(keep, torch.arange(c).expand(n, c), perm)
        x = x[torch.arange(n).view(n, 1), perm.to(dev)]
    x = flip_crop(x, gen, flip, max(1, round(4 * h / 32)))
    if trivial_augment:
        from torchvision.transforms import v2  # on use: its import costs ~150 MiB in every process

        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        ta = v2.TrivialAugmentWide()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = torch.cat([ta(x[i:i + ta_group]) for i in range(0, n, ta_group)])
    return x.clamp(0, 1)


def max_loss(model, xb, yb, gen, repeats: int = 5, trivial_augment: bool = True, ta_group: int = 16,
             flip: bool = True):
    views = torch.cat([strong_augment(xb, gen, trivial_augment, ta_group, flip) for _ in range(repeats)])
    targets = torch.cat([yb] * repeats)
    per_sample = F.cross_entropy(model(views), targets, reduction="none").view(repeats, len(xb))
    return per_sample.max(0).values.mean()


@DEFENSES.register("ueraser", "UEraser (light): max loss over K = 5 strong augmentations per image "
                   "(plasma, channel shuffle, TrivialAugment; ~5x cost)", UEraserParams)
def make_ueraser(p: UEraserParams) -> Defense:
    def loss_fn(model, xb, yb, gen):
        return max_loss(model, xb, yb, gen, p.repeats, p.trivial_augment, p.ta_group, p.flip)

    return Defense("ueraser", loss_fn=loss_fn)
