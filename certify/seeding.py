"""Seeds derived from the run seed and a stage's name, never from call order; the one seeded
stratified draw (the data split, SAL and MI images, PUE's subset, the attacker's set)."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from certify.errors import UserError


def derive(seed: int, *names: object) -> int:
    """A 63-bit seed that depends only on `seed` and `names`."""
    text = "/".join([str(int(seed))] + [str(n) for n in names])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *names: object) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive(seed, *names))
    return g


def stratified_draw(y: torch.Tensor, size: int | float, seed: int, where: str):
    """(drawn, rest): indices of a seeded stratified draw of `size` images from labels `y` and of the
    others, each sorted (source order). `size` is a count or, as a float, a fraction of len(y);
    a size that covers every image draws them all.

    scikit-learn's train_test_split(stratify=y) keeps every class's share in both parts, so each
    class needs two images and each part at least one image per class.
    """
    from sklearn.model_selection import train_test_split  # only loaded where a draw is made

    n = len(y)
    if size >= (1.0 if isinstance(size, float) else n):
        return torch.arange(n), torch.arange(0)
    try:
        rest, drawn = train_test_split(np.arange(n), test_size=size, stratify=y.numpy(),
                                       random_state=seed % 2**32)
    except ValueError as e:
        raise UserError(f"{where}: cannot draw a stratified {size} of {n} images: {e}") from None
    return torch.from_numpy(np.sort(drawn)), torch.from_numpy(np.sort(rest))
