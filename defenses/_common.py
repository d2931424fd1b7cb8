"""The mixing defense shared by MixUp and CutMix: torchvision's transform (`transform`, a name in
`torchvision.transforms.v2`) seeded per batch, soft labels and their loss.

torchvision draws lambda from the global RNG, so each batch runs inside `torch.random.fork_rng`
seeded from the training generator: runs stay seeded and the global RNG is left as it was.
Soft labels need the class count: `prepare` (identity on the data) records it from the training
labels, and the loss pads soft targets with zeros to the model's output width should a class be
absent from the training labels. torchvision is imported where a batch is mixed, not where the
defense is registered: its import (which pulls in torch._dynamo) costs ~150 MiB and ~1 s in every
process, and most runs never mix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from defenses.base import Defense


def seeded_mix(transform: str, alpha: float, xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator,
               num_classes: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's `transform` ("MixUp" or "CutMix") on one batch, its randomness seeded from `gen`."""
    from torchvision.transforms import v2

    if yb.dim() != 1:  # already soft: leave the batch alone
        return xb, yb
    k = max(int(num_classes), int(yb.max()) + 1 if len(yb) else 1, 2)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(v2, transform)(alpha=alpha, num_classes=k)(xb, yb)


def soft_target_loss(model, xb, yb, gen):
    """Cross-entropy on (possibly soft) targets, soft ones zero-padded to the model's output width."""
    out = model(xb)
    if yb.dim() == 2 and yb.shape[1] < out.shape[1]:
        yb = F.pad(yb, (0, out.shape[1] - yb.shape[1]))
    return F.cross_entropy(out, yb)


def mixing_defense(name: str, transform: str, alpha: float) -> Defense:
    state = {"k": 0}

    def prepare(x, y, seed):
        state["k"] = int(y.max()) + 1 if len(y) else 0
        return x, y

    def batch_transform(xb, yb, gen):
        return seeded_mix(transform, alpha, xb, yb, gen, state["k"])

    return Defense(name, prepare=prepare, batch_transform=batch_transform, loss_fn=soft_target_loss)
