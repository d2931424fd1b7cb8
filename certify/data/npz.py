"""`npz:PATH`: arrays `x` and `y` in a NumPy .npz file (read member by member, never unpickled).

x: uint8 N×H×W×C or N×H×W (C 1 or 3, channels last), or float32 of the same shapes in [0, 1]
(float values are rounded onto the 1/255 grid, as 8-bit storage would). y: integer labels 0..K-1,
one per image, at least 2 classes, none empty. An optional `classes` array of strings names the
classes (K = its length); without it K = max(y) + 1 and the names are "0".."K-1".

Limits (`_common`): each member at most `MAX_BYTES` uncompressed (its declared size and its .npy
header are checked before it is read), images at most `MAX_SIDE` pixels per side, K at most N.
"""
from __future__ import annotations

import lzma
import math
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch

from certify.data._common import ByteLimit, Source, check_bytes, check_side, labels_and_classes, pixels_to_grid
from certify.errors import UserError

# the .npy header readers numpy documents, by format version
_CHUNK = 2**24  # bytes read (and decompressed) at a time
_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# what a damaged or foreign zip can raise while it is read (unsupported or encrypted members included)
_ZIP_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
               NotImplementedError, RuntimeError)


def read_npy(f: BinaryIO, size: int, name: str, check: Callable[[tuple, np.dtype], None] | None = None) -> np.ndarray:
    """The .npy array in the `size` bytes of stream f; its header is checked against `size` (and by
    `check(shape, dtype)`, which raises) before anything is allocated, and a stream that holds more or
    less is refused (ValueError). Read in chunks: a zip member read whole is decompressed into a second
    buffer of its size."""
    header = _HEADERS.get(np.lib.format.read_magic(f))
    if header is None:
        raise ValueError(f"{name}: unsupported .npy format version")
    shape, fortran, dtype = header(f)
    if dtype.hasobject:
        raise ValueError(f"{name} holds pickled Python objects")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if nbytes != size - f.tell():
        raise ValueError(f"{name}: header says {shape} of {dtype} ({nbytes:,} bytes), "
                         f"the file holds {size - f.tell():,}")
    if check is not None:
        check(shape, dtype)
    buf = bytearray(nbytes)
    view, at = memoryview(buf), 0
    while at < nbytes:
        got = f.readinto(view[at:at + _CHUNK])
        if not got:
            break
        at += got
    if at != nbytes or f.read(1):  # reading to the end also checks a zip member's CRC
        raise ValueError(f"{name}: truncated or padded")
    return np.frombuffer(buf, dtype).reshape(shape, order="F" if fortran else "C")


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path, limit: ByteLimit | None,
                 check: Callable[[tuple, np.dtype], None] | None = None) -> np.ndarray:
    """One .npy member; its declared sizes are checked before anything is allocated or decompressed."""
    check_bytes(info.file_size, f"{p}: {info.filename}", limit)
    with z.open(info) as f:
        return read_npy(f, info.file_size, info.filename, check)


def _x_and_y(p: Path, names: list[str]) -> list[str]:
    for k in ("x", "y"):
        if k not in names:
            raise UserError(f"{p}: missing array {k!r} (found: {', '.join(sorted(names)) or 'none'}; expected x and y)")
    return [k for k in ("x", "y", "classes") if k in names]


def read_arrays(p: Path, choose: Callable[[Path, list[str]], list[str]] = _x_and_y,
                limit: ByteLimit | None = None, checks: dict | None = None) -> dict[str, np.ndarray]:
    """The arrays `choose(p, names of every array)` picks from the .npz at p (by default x, y and, if
    present, classes), each at most `limit` as declared; any other member is never read. A damaged
    file is one line."""
    try:
        with zipfile.ZipFile(p) as z:
            members = {i.filename[:-4]: i for i in z.infolist() if i.filename.endswith(".npy")}
            return {k: _read_member(z, members[k], p, limit, (checks or {}).get(k)) for k in choose(p, list(members))}
    except UserError:
        raise
    except _ZIP_ERRORS as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{p}: not a readable .npz of plain arrays ({msg})") from None


def read_npz(path: str | Path, where: str) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{where}: {p} does not exist")
    if not p.is_file():
        raise UserError(f"{where}: {p} is not a file")
    def as_float32(shape: tuple, dtype) -> None:  # the images become float32: 4 bytes a value
        check_bytes(math.prod(shape) * 4, f"{p}: x ({'x'.join(map(str, shape))} as float32)")

    arrays = read_arrays(p, checks={"x": as_float32})
    x, y, names = arrays["x"], arrays["y"], arrays.get("classes")

    # images
    if x.dtype not in (np.uint8, np.float32):
        raise UserError(f"{p}: x has dtype {x.dtype}; expected uint8 (0..255) or float32 in [0, 1]")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or min(x.shape) < 1:
        raise UserError(f"{p}: x has shape {tuple(x.shape)}; expected N×H×W×C (C 1 or 3, channels last) "
                        f"or N×H×W with N, H, W ≥ 1")
    check_side(x.shape[1], x.shape[2], str(p))
    xt = pixels_to_grid(torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2), f"{p}: x")

    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise UserError(f"{p}: classes must be a 1-D array of strings")
        names = [str(n.decode() if isinstance(n, bytes) else n) for n in names.tolist()]
    y, classes = labels_and_classes(y, len(xt), names, str(p))
    return xt, y, classes


def load_npz(path: str, where: str) -> Source:
    x, y, classes = read_npz(path, where)
    return Source(classes, x, torch.from_numpy(y))
