"""Arrays in files a user hands over (`.pt`, `.npy`, `.npz`), read with bounded sizes, and their
image layout.

`.pt` files must be zip archives as `torch.save` writes them (the legacy format is refused), every
member stored uncompressed as torch stores it (so nothing loaded is larger than the file), the
pickle at most `MAX_PICKLE_BYTES`; they are loaded with `torch.load(weights_only=True)`, which
builds tensors and plain containers only. `.npy` and `.npz` files are read through `npz.read_npy`
(header checked against the file size, never unpickled). Every tensor is checked before anything
is computed from it: a strided CPU tensor of one of `DTYPES`, at most `MAX_BYTES` once converted to
float32, no more values than its storage holds (a tensor's shape and strides can describe far more
than its file holds), sides at most `MAX_SIDE`. A caller that knows how large the array must be (a
perturbation of the clean set) gives a smaller byte limit, checked before anything is read.
"""
from __future__ import annotations

import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from certify.data._common import ByteLimit, check_bytes, check_side
from certify.data.npz import read_arrays, read_npy
from certify.errors import UserError

SUFFIXES = (".pt", ".pth", ".npy", ".npz")
MAX_PICKLE_BYTES = 2**20  # a pickle naming a few tensors is a few hundred bytes
# what torch.load can raise on a damaged or hostile file (weights_only refusals are UnpicklingError)
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError, KeyError, TypeError,
                AttributeError, IndexError, OverflowError, struct.error, zipfile.BadZipFile)


def _first_line(e: Exception) -> str:
    """A message's first line, cut short and printable (a hostile file chooses names it contains)."""
    text = str(e)
    refused = re.search(r"WeightsUnpickler error: (.*)", text)  # torch's own advice is to load it unsafely
    lines = (refused.group(1).split(" Please use")[0] if refused else text).strip().splitlines()
    line = re.sub(r"\x1b\[[0-9;]*m", "", lines[0] if lines else "")[:200]
    return "".join(c if c.isprintable() else "?" for c in line) or type(e).__name__


def existing_file(path: str, where: str, suffixes: tuple[str, ...]) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{where}: {p} does not exist")
    if not p.is_file():
        raise UserError(f"{where}: {p} is not a file")
    if p.suffix.lower() not in suffixes:
        raise UserError(f"{where}: {p.name} must end in {', '.join(suffixes)}")
    return p


def _check_pt_archive(p: Path, limit: ByteLimit | None) -> None:
    try:
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise UserError(f"{p}: not a file written by torch.save (a zip archive; the legacy format is not "
                        f"read)") from None
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise UserError(f"{p}: member {info.filename} is compressed; torch.save stores members as they are")
        if info.filename.endswith(".pkl") and info.file_size > MAX_PICKLE_BYTES:
            raise UserError(f"{p}: pickle of {info.file_size:,} bytes, over the limit of {MAX_PICKLE_BYTES:,}")
    check_bytes(sum(i.file_size for i in infos), str(p), limit)


def read_pt(p: Path, limit: ByteLimit | None = None):
    """What a `.pt` file holds (tensors and plain containers only), its members at most `limit` in all."""
    _check_pt_archive(p, limit)
    try:
        # torch warns on stderr while loading sparse, quantized or legacy-storage tensors: what the file
        # holds is refused below in one line, or read, without them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as e:
        raise UserError(f"{p}: not loadable with torch.load(weights_only=True) ({_first_line(e)})") from None


# what a tensor read from a file may hold: the integer and real types images, labels and perturbations
# come in (meta and other devices, float8, unsigned 16-64 bit, complex, bool and quantized are refused
# before anything is computed from them: most torch kernels have no implementation for them)
DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
          torch.float16, torch.bfloat16, torch.float32, torch.float64)


def checked(t: torch.Tensor, what: str) -> torch.Tensor:
    """t detached, after the checks every array passes before anything is computed from it."""
    kind = str(t.dtype).removeprefix("torch.")
    if t.device.type != "cpu" or t.layout != torch.strided or t.dtype not in DTYPES:
        raise UserError(f"{what}: a {kind} tensor on device {t.device.type}, layout "
                        f"{str(t.layout).removeprefix('torch.')}; expected a strided CPU tensor of "
                        f"{', '.join(str(d).removeprefix('torch.') for d in DTYPES)}")
    check_bytes(t.numel() * 4, f"{what} ({'x'.join(map(str, t.shape))} as float32)")
    # torch.load checks the strides stay inside the storage; strides that repeat its elements (a stride
    # of 0: `expand`) describe more values than the file holds, and any copy would allocate them all
    stored = t.untyped_storage().nbytes() // t.element_size()
    if t.numel() > stored:
        raise UserError(f"{what}: {t.numel():,} values ({'x'.join(map(str, t.shape))}) from a storage of {stored:,} "
                        f"(its strides repeat values, as expand() makes); save a copy made with .contiguous()")
    return t.detach()


def _from_numpy(a: np.ndarray, what: str) -> torch.Tensor:
    if a.dtype.kind not in "fiu" or a.dtype.itemsize > 8:  # torch has no float128
        raise UserError(f"{what} has dtype {a.dtype}; expected numbers")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("=")))


def _npy(p: Path, limit: ByteLimit | None) -> np.ndarray:
    size = p.stat().st_size
    check_bytes(size, str(p), limit)
    try:
        with open(p, "rb") as f:
            return read_npy(f, size, p.name)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{p}: not a readable .npy of plain numbers ({_first_line(e)})") from None


def _only_one(p: Path, names: list[str]) -> list[str]:
    if len(names) != 1:
        raise UserError(f"{p}: expected exactly one array, found {len(names)} ({', '.join(sorted(names)) or 'none'})")
    return names


def read_one_tensor(p: Path, limit: ByteLimit | None = None) -> torch.Tensor:
    """The one array of a `.pt` (a tensor, or a dict holding exactly one tensor), `.npy` or `.npz`
    file; the file (an .npz member: as declared, before it is decompressed) at most `limit`."""
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return checked(_from_numpy(_npy(p, limit), str(p)), str(p))
    if suffix == ".npz":
        ((name, a),) = read_arrays(p, _only_one, limit).items()
        return checked(_from_numpy(a, f"{p}: {name}"), f"{p}: {name}")
    obj = read_pt(p, limit)
    if isinstance(obj, dict):
        found = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if len(found) != 1:
            raise UserError(f"{p}: a dict holding {len(found)} tensors ({', '.join(map(str, found)) or 'none'}); "
                            f"expected a tensor, or a dict holding exactly one")
        ((name, obj),) = found.items()
        return checked(obj, f"{p}: {name}")
    if not isinstance(obj, torch.Tensor):
        raise UserError(f"{p}: holds a {type(obj).__name__}; expected a tensor, or a dict holding exactly one")
    return checked(obj, str(p))


def as_nchw(t: torch.Tensor, what: str, like: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """N×C×H×W (a view) of images given N×C×H×W, N×H×W×C or N×H×W (one channel). With `like` (the
    N, C, H, W they must match) the layout that matches; without, channels first when C is 1 or 3."""
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4 or min(t.shape) < 1:
        raise UserError(f"{what} has shape {tuple(t.shape)}; expected N×C×H×W, N×H×W×C or N×H×W")
    if like is not None and len(t) != like[0]:
        raise UserError(f"{what} holds {len(t)} images but the clean set has {like[0]} (they pair by order)")
    layouts = (t, t.permute(0, 3, 1, 2))  # channels first, channels last
    fits = [v for v in layouts if (v.shape[1] in (1, 3) if like is None else tuple(v.shape[1:]) == tuple(like[1:]))]
    if not fits:
        want = ("C 1 or 3" if like is None else
                f"like the clean images: {like[0]}×{like[1]}×{like[2]}×{like[3]} or {like[0]}×{like[2]}×{like[3]}×{like[1]}")
        raise UserError(f"{what} has shape {'×'.join(map(str, t.shape))}; expected N×C×H×W or N×H×W×C ({want})")
    v = fits[0]
    check_side(v.shape[2], v.shape[3], what)
    return v

