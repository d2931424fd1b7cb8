"""Crafting helpers shared by the model-based poisons (`em`, `miue`, `pue`, `rem`, `tap`): seeded
index batches, the crafting model and its optimizer step, perturbed images, δ's initialisation and
an integer parameter check.

A poison's cache key covers the project modules it imports (`certify.registry.Registry.code`), so
editing a helper here makes again the releases of exactly the poisons that import it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import CraftContext
from certify.errors import UserError
from certify.seeding import derive
from certify.training import flip_crop


class BatchStream:
    """An endless stream of index batches, one seeded permutation per pass over the data."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator):
        self.n, self.batch_size, self.gen = n, batch_size, gen
        self._order, self._pos = torch.randperm(n, generator=gen), 0

    def __next__(self) -> torch.Tensor:
        if self._pos >= self.n:
            self._order, self._pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx


def batches(n: int, batch_size: int, gen: torch.Generator | None = None):
    """Index batches covering 0..n-1 once (a seeded permutation when `gen` is given)."""
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def crafting_model(ctx: CraftContext, name: str) -> nn.Module:
    """A fresh crafting model on ctx.device whose weights depend only on the poison's seed."""
    return ctx.make_model(derive(ctx.seed, name, "model")).to(ctx.device)


def sgd(model: nn.Module, ctx: CraftContext) -> torch.optim.Optimizer:
    t = ctx.train
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def model_step(model: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
               gen: torch.Generator, flip: bool, loss_fn=None) -> float:
    """One optimizer step of cross-entropy (or `loss_fn(model, x, y)`) on a flipped batch, train mode."""
    model.train()
    device = next(model.parameters()).device
    xb = flip_crop(xb, gen, flip, 0).to(device)
    yb = yb.to(device)
    loss = loss_fn(model, xb, yb) if loss_fn is not None else F.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def perturbed_images(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return (x + delta).clamp(0, 1)


def uniform_init(shape, epsilon: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * epsilon


def check_int_positive(where: str, **values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{where}: {name} must be a positive integer, got {v!r}")
