"""`idx:DIR`: one pair of IDX files in a folder (the format MNIST and Fashion-MNIST are published in),
gzip-compressed or not: `*-images-idx3-ubyte[.gz]` (uint8 N×H×W) and `*-labels-idx1-ubyte[.gz]`
(uint8 N). Ten classes named "0".."9" unless the labels go further; split 80/20 stratified by seed.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from certify.data._common import Source, uint8_to_tensor
from certify.errors import UserError

_UBYTE = 0x08  # the IDX type code for unsigned bytes


def read_idx(path: Path, dims: int) -> np.ndarray:
    """The uint8 array in one IDX file with `dims` dimensions; one-line errors for anything else."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: not readable ({str(e).strip() or type(e).__name__})") from None
    header = 4 + 4 * dims
    if len(raw) < header or raw[:2] != b"\0\0" or raw[2] != _UBYTE or raw[3] != dims:
        raise UserError(f"{path}: not an IDX file of unsigned bytes with {dims} dimension(s)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise UserError(f"{path}: header says {'x'.join(map(str, shape))} = {size} bytes, "
                        f"the file holds {len(raw) - header} (truncated or padded)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern)) + sorted(folder.glob(pattern + ".gz"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise UserError(f"{folder}: expected one file matching {pattern}[.gz], found {what}")
    return found[0]


def load_idx(path: str, where: str) -> Source:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"{where}: {folder} is not a folder")
    images = read_idx(_one(folder, "*-images-idx3-ubyte"), 3)
    labels = read_idx(_one(folder, "*-labels-idx1-ubyte"), 1).astype(np.int64)
    if len(images) != len(labels):
        raise UserError(f"{folder}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise UserError(f"{folder}: the IDX files hold no images")
    classes = [str(i) for i in range(max(10, int(labels.max()) + 1))]
    return Source(classes, uint8_to_tensor(images[..., None]), torch.from_numpy(labels))
