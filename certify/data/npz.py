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

import numpy as np
import torch

from certify.data._common import Source, check_bytes, check_class_count, check_side, to_grid, uint8_to_tensor
from certify.errors import UserError

# the .npy header readers numpy documents, by format version
_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# what a damaged or foreign zip can raise while it is read (unsupported or encrypted members included)
_ZIP_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
               NotImplementedError, RuntimeError)


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path) -> np.ndarray:
    """One .npy member; its declared sizes are checked before anything is allocated or decompressed."""
    where = f"{p}: {info.filename}"
    check_bytes(info.file_size, where)
    with z.open(info) as f:
        header = _HEADERS.get(np.lib.format.read_magic(f))
        if header is None:
            raise ValueError(f"{info.filename}: unsupported .npy format version")
        shape, fortran, dtype = header(f)
        if dtype.hasobject:
            raise ValueError(f"{info.filename} holds pickled Python objects")
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if nbytes != info.file_size - f.tell():
            raise ValueError(f"{info.filename}: header says {shape} of {dtype} ({nbytes:,} bytes), "
                             f"the member holds {info.file_size - f.tell():,}")
        buf = bytearray(nbytes)
        if f.readinto(buf) != nbytes or f.read(1):  # reading to the end also checks the CRC
            raise ValueError(f"{info.filename}: truncated or padded")
    return np.frombuffer(buf, dtype).reshape(shape, order="F" if fortran else "C")


def _read_arrays(p: Path) -> dict[str, np.ndarray]:
    """x, y and (if present) classes of the .npz at p; any other member is never read."""
    try:
        with zipfile.ZipFile(p) as z:
            members = {i.filename[:-4]: i for i in z.infolist() if i.filename.endswith(".npy")}
            for k in ("x", "y"):
                if k not in members:
                    raise UserError(f"{p}: missing array {k!r} (found: {', '.join(sorted(members)) or 'none'}; "
                                    f"expected x and y)")
            return {k: _read_member(z, members[k], p) for k in ("x", "y", "classes") if k in members}
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
    arrays = _read_arrays(p)
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
    if x.dtype == np.float32:
        if not np.isfinite(x).all():
            raise UserError(f"{p}: x contains NaN or Inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise UserError(f"{p}: x values must lie in [0, 1] for float32 (found {lo:g} .. {hi:g})")
        xt = to_grid(torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous())
    else:
        xt = uint8_to_tensor(x)

    # labels
    if y.dtype.kind not in "iu":
        raise UserError(f"{p}: y has dtype {y.dtype}; labels must be integers")
    if y.ndim != 1:
        raise UserError(f"{p}: y has shape {tuple(y.shape)}; expected one label per image (N,)")
    if len(y) != len(x):
        raise UserError(f"{p}: x holds {len(x)} images but y holds {len(y)} labels")
    y = y.astype(np.int64)
    if int(y.min()) < 0:
        raise UserError(f"{p}: negative label {int(y.min())} (labels must be 0..K-1)")

    # classes: K (from `classes` or the largest label) is checked against the images before it sizes anything
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise UserError(f"{p}: classes must be a 1-D array of strings")
        if int(y.max()) >= len(names):
            raise UserError(f"{p}: label {int(y.max())} out of range for {len(names)} classes")
        check_class_count(len(names), len(y), str(p))
        classes = [str(n.decode() if isinstance(n, bytes) else n) for n in names.tolist()]
    else:
        check_class_count(int(y.max()) + 1, len(y), str(p))
        classes = [str(i) for i in range(int(y.max()) + 1)]
    if len(classes) < 2:
        raise UserError(f"{p}: at least 2 classes are needed (found {len(classes)})")
    counts = np.bincount(y, minlength=len(classes))
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise UserError(f"{p}: class {c} has no images (labels must cover 0..{len(classes) - 1})")
    return xt, y, classes


def load_npz(path: str, where: str) -> Source:
    x, y, classes = read_npz(path, where)
    return Source(classes, x, torch.from_numpy(y))
