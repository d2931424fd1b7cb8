"""The released set of `certify audit --release SRC`, paired image for image with the clean set.

SRC is any source `load_split` reads, `pt:PATH` with images alone (they take the clean set's
labels), or `delta:PATH`, a perturbation added to the clean images (`delta`). Images are read as
given (no resizing; a folder's may differ in size), so the perturbation can be measured before
`--image-size` changes it.
"""
from __future__ import annotations

import torch

from certify.data import load_split, parse_spec
from certify.data.delta import perturb, read_perturbation
from certify.data.pt import read_pt_images
from certify.errors import UserError


def _shape_of(x_clean, where: str) -> tuple[int, int, int, int]:
    if not isinstance(x_clean, torch.Tensor):
        raise UserError(f"{where}: a perturbation file needs clean images of one size (the clean set's differ)")
    return tuple(int(s) for s in x_clean.shape)


def load_release(spec: str, x_clean, y_clean: torch.Tensor, data_root=None, download: bool = False,
                 seed: int = 0):
    """(released images as given, labels): a tensor, or a list where a folder's sizes differ."""
    where = f"release {spec!r}"
    kind, path, _ = parse_spec(spec)
    if kind == "delta":
        return perturb(x_clean, read_perturbation(path, _shape_of(x_clean, where), where)), y_clean
    if kind == "pt":
        like = _shape_of(x_clean, where) if isinstance(x_clean, torch.Tensor) else None
        x, y, _ = read_pt_images(path, where, like)
        return x, (y_clean if y is None else torch.from_numpy(y))
    x, y, _ = load_split(spec, data_root, download, seed, mixed_ok=True)
    return x, y
