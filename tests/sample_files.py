"""Dataset files built from their bytes, for the data and bad-input tests (a helper module, not a
test module): IDX files with any header, an npz whose member's header lies, a PNG that declares
its size and holds no pixels."""
from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np


def write_idx(path: Path, a: np.ndarray, compress: bool = True, dims: tuple | None = None) -> None:
    """An IDX file holding a's bytes; its header declares `dims` (default: a's shape)."""
    dims = a.shape if dims is None else dims
    raw = bytes([0, 0, 0x08, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + a.tobytes()
    if compress:
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def npz_with_member(path: Path, header_shape: tuple, payload: bytes) -> str:
    """An npz whose x.npy declares `header_shape` (uint8) and holds `payload`; y is honest."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": header_shape})
    ys = io.BytesIO()
    np.save(ys, np.array([0, 1, 0, 1]))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", head.getvalue() + payload)
        z.writestr("y.npy", ys.getvalue())
    return f"npz:{path}"


def header_only_png(path: Path, side: int) -> None:
    """A PNG that declares side x side gray pixels and holds none: all Pillow reads before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
