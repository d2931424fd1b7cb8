"""`delta:PATH` (`certify audit --release`): a perturbation of the clean set, as reference
implementations of poisons save theirs.

The file (`.pt`: a tensor or a dict holding exactly one; `.npy`; `.npz` with one array) holds float
values in [-1, 1] on the [0, 1] image scale, shaped like the clean images, N×C×H×W or N×H×W×C, and
pairs with them by order. The release is what a publication would hold: clean + perturbation,
clipped to [0, 1] and rounded to the 8-bit grid.
"""
from __future__ import annotations

import math

import torch

from certify.data._common import ByteLimit, to_grid
from certify.data.arrays import SUFFIXES, as_nchw, existing_file, read_one_tensor
from certify.errors import UserError


# what a file holding one array of the clean set's shape may add to it: a .npy header, a .pt pickle
FILE_OVERHEAD = 2**20


def _limit(like: tuple[int, int, int, int]) -> ByteLimit:
    """A perturbation is the clean set's shape of at most 8-byte values: a file that holds (or an .npz
    member that declares) more is refused before it is read or decompressed."""
    return ByteLimit(math.prod(like) * 8 + FILE_OVERHEAD,
                     f" (a perturbation of the clean set's {'×'.join(map(str, like))} values of at most 8 bytes)")


def read_perturbation(path: str, like: tuple[int, int, int, int], where: str) -> torch.Tensor:
    """float32 N×C×H×W in [-1, 1], checked against the clean set's shape `like`."""
    p = existing_file(path, where, SUFFIXES)
    t = read_one_tensor(p, _limit(like))
    if not t.is_floating_point():
        raise UserError(f"{p}: the perturbation has dtype {str(t.dtype).removeprefix('torch.')}; expected float "
                        f"values in [-1, 1] (one in 0..255 pixel units: divide it by 255 as a float)")
    delta = as_nchw(t, str(p), like).to(torch.float32)
    if not bool(torch.isfinite(delta).all()):
        raise UserError(f"{p}: the perturbation contains NaN or Inf")
    top = float(delta.abs().max())
    # whole numbers reaching 1 (a change of one level, in pixel units) are no [0, 1]-scale perturbation either
    if 1.0 < top <= 255.0 or (top == 1.0 and torch.equal(delta, delta.round())):
        raise UserError(f"{p}: the perturbation reaches {top:.4g}, so it looks like 0..255 pixel units; divide it "
                        f"by 255 (a perturbation is given on the [0, 1] image scale, in [-1, 1])")
    if top > 1.0:
        raise UserError(f"{p}: perturbation values must lie in [-1, 1] (found up to {top:g} in size)")
    return delta.contiguous()


def perturb(x_clean: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """What a publication of clean + delta holds: clipped to [0, 1], rounded to the 8-bit grid."""
    return to_grid((x_clean + delta).clamp_(0.0, 1.0))
