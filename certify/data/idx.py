"""`idx:DIR`: one pair of IDX files in a folder (the format MNIST and Fashion-MNIST are published in),
gzip-compressed or not: `*-images-idx3-ubyte[.gz]` (uint8 N×H×W) and `*-labels-idx1-ubyte[.gz]`
(uint8 N). Ten classes named "0".."9" unless the labels go further; split 80/20 stratified by seed.
Limits (`_common`): each payload at most `MAX_BYTES`, images at most `MAX_SIDE` pixels per side.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from certify.data._common import Source, check_bytes, check_side, uint8_to_tensor
from certify.errors import UserError

_UBYTE = 0x08  # the IDX type code for unsigned bytes


def _shape(head: bytes, dims: int, path: Path) -> tuple[int, ...]:
    if len(head) < 4 + 4 * dims or head[:2] != b"\0\0" or head[2] != _UBYTE or head[3] != dims:
        raise UserError(f"{path}: not an IDX file of unsigned bytes with {dims} dimension(s)")
    return tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))


def read_idx(path: Path, dims: int, becomes: type = np.float32) -> np.ndarray:
    """The uint8 array in one IDX file with `dims` dimensions; one-line errors for anything else.

    The header's size (a Python product: no overflow), counted as the `becomes` array the caller
    makes of it (4 GiB of bytes are 16 GiB as float32), is checked against `MAX_BYTES` before the
    payload is read, and at most one byte more than it declares is read (or decompressed).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            shape = _shape(f.read(4 + 4 * dims), dims, path)
            size = math.prod(shape)
            check_bytes(size * np.dtype(becomes).itemsize,
                        f"{path} ({'x'.join(map(str, shape))} as {np.dtype(becomes).name})")
            payload = f.read(size + 1)  # one byte more: a padded file is refused too
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: not readable ({str(e).strip() or type(e).__name__})") from None
    if len(payload) != size:
        raise UserError(f"{path}: header says {'x'.join(map(str, shape))} = {size} bytes, "
                        f"the file holds {'more' if len(payload) > size else len(payload)} (truncated or padded)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern)) + sorted(folder.glob(pattern + ".gz"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise UserError(f"{folder}: expected one file matching {pattern}[.gz], found {what}")
    if not found[0].is_file():  # a FIFO would block the read, a device never end it
        raise UserError(f"{found[0]}: not a regular file")
    return found[0]


def load_idx(path: str, where: str) -> Source:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"{where}: {folder} is not a folder")
    images = read_idx(_one(folder, "*-images-idx3-ubyte"), 3)
    check_side(images.shape[1], images.shape[2], str(folder))
    labels = read_idx(_one(folder, "*-labels-idx1-ubyte"), 1, np.int64).astype(np.int64)
    if len(images) != len(labels):
        raise UserError(f"{folder}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise UserError(f"{folder}: the IDX files hold no images")
    classes = [str(i) for i in range(max(10, int(labels.max()) + 1))]
    return Source(classes, uint8_to_tensor(images[..., None]), torch.from_numpy(labels))
