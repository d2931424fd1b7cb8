"""Seeds derived from the run seed and a stage's name, never from call order."""
from __future__ import annotations

import hashlib

import torch


def derive(seed: int, *names: object) -> int:
    """A 63-bit seed that depends only on `seed` and `names`."""
    text = "/".join([str(int(seed))] + [str(n) for n in names])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *names: object) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive(seed, *names))
    return g
