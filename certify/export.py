"""Export a released (protected) dataset the way a data owner would publish it.

Two formats, both read back bit for bit by `certify.data.load_split`:
- `png`: `OUT/<label>_<class>/<index>.png`, 8-bit, grayscale as mode L, colour as RGB. Folder names
  start with the zero-padded label (`0_airplane`, `1_automobile`, ...) so that sorted folder names,
  the label order of `folder:OUT`, equal the original class order; `<index>` is the image's index in
  the exported set, zero-padded to at least 5 digits. Read back with `folder:OUT`, images come
  grouped by class (label order), each class in its original order, and the class names carry the
  label prefix.
- `npz`: `OUT/data.npz` with `x` uint8 N×H×W×C (N×H×W for one channel), `y` int64 and `classes`
  (the class names); read back with `npz:OUT/data.npz` in the original order.
Either way `OUT/manifest.json` holds the manifest given (poison, parameters, budget, seed, dataset,
counts, ...) plus the format, and any extra files given (`certify poison`: the sample grid
`samples-<poison>.png`) lie beside it; `folder:OUT` reads only the class folders. Everything is written into a staging folder next to OUT first and moved
into place at the end, so a failure leaves OUT as it was (never a half-written export or manifest).
OUT must be absent, empty, or a previous export (it has a manifest.json), which is replaced whole.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from certify.errors import UserError

FORMATS = ("png", "npz")
MANIFEST = "manifest.json"
NPZ_NAME = "data.npz"


def class_folder_names(classes: list[str]) -> list[str]:
    """`<zero-padded label>_<name>` with path-unsafe characters replaced; sorted order = label order."""
    width = len(str(max(len(classes) - 1, 0)))
    names = []
    for label, name in enumerate(classes):
        safe = re.sub(r"[^\w.\-]+", "_", str(name)).strip("._")[:80] or "class"
        names.append(f"{label:0{width}d}_{safe}")
    return names


def _to_uint8(released: torch.Tensor) -> np.ndarray:
    """float N×C×H×W in [0, 1] -> uint8 N×H×W×C (rounded onto the 8-bit grid)."""
    if not isinstance(released, torch.Tensor) or released.dim() != 4 or released.shape[1] not in (1, 3):
        raise UserError(f"export: images must be an N×C×H×W tensor with C 1 or 3 "
                        f"(got shape {tuple(getattr(released, 'shape', ()))})")
    if not released.is_floating_point():
        raise UserError(f"export: images must be float in [0, 1] (got {released.dtype})")
    x = released.detach().to("cpu", torch.float32)
    if len(x) == 0:
        raise UserError("export: no images to export")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise UserError("export: image values must be finite and lie in [0, 1]")
    return torch.round(x * 255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _labels(y, n: int, k: int) -> np.ndarray:
    y = torch.as_tensor(y).detach().cpu()
    if y.dim() != 1 or len(y) != n or y.is_floating_point() or y.dtype == torch.bool:
        raise UserError(f"export: labels must be {n} integers, one per image (got shape {tuple(y.shape)}, {y.dtype})")
    y = y.to(torch.int64).numpy()
    if n and (int(y.min()) < 0 or int(y.max()) >= k):
        raise UserError(f"export: labels must lie in 0..{k - 1} for {k} classes (found {int(y.min())}..{int(y.max())})")
    counts = np.bincount(y, minlength=k)
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise UserError(f"export: class {c} has no images (an exported set needs every class, or it cannot be loaded back)")
    return y


def _json_default(o: Any):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (np.generic, torch.Tensor)) and getattr(o, "ndim", 0) == 0:
        return o.item()
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"manifest value of type {type(o).__name__} is not JSON-serialisable")


def check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"export: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserError(f"export: {out} is not empty and is not a previous export (no {MANIFEST}); "
                        f"choose an empty or new folder")


def _write_png(stage: Path, x: np.ndarray, y: np.ndarray, classes: list[str]) -> None:
    from PIL import Image

    folders = class_folder_names(classes)
    for f in folders:
        (stage / f).mkdir()
    width = max(5, len(str(len(x) - 1)))
    gray = x.shape[-1] == 1
    for i, (img, label) in enumerate(zip(x, y)):
        im = Image.fromarray(img[..., 0], mode="L") if gray else Image.fromarray(img, mode="RGB")
        im.save(stage / folders[int(label)] / f"{i:0{width}d}.png", format="PNG")


def _write_npz(stage: Path, x: np.ndarray, y: np.ndarray, classes: list[str]) -> None:
    arr = x[..., 0] if x.shape[-1] == 1 else x
    names = np.asarray([str(c) for c in classes], dtype=np.str_)
    with open(stage / NPZ_NAME, "wb") as f:
        np.savez_compressed(f, x=arr, y=y.astype(np.int64), classes=names)


def export_released(released: torch.Tensor, y, classes, out_dir, fmt: str, manifest: dict,
                    extra_files: dict[str, bytes] | None = None) -> Path:
    """Write the released images (float N×C×H×W in [0, 1]) with labels `y` as `fmt` (png | npz) into
    `out_dir`, plus `manifest.json` and `extra_files` (plain file name -> bytes). Returns the folder.
    Raises UserError for bad input or a folder that is neither absent, empty nor a previous export."""
    if fmt not in FORMATS:
        raise UserError(f"export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise UserError(f"export: at least 2 classes are needed (got {len(classes)})")
    if not isinstance(manifest, dict):
        raise UserError(f"export: manifest must be a dict (got {type(manifest).__name__})")
    extra_files = dict(extra_files or {})
    for name in extra_files:
        if not re.fullmatch(r"[\w.\-]+", name) or name.startswith(".") or name in (MANIFEST, NPZ_NAME):
            raise UserError(f"export: {name!r} cannot be an extra file's name (a plain file name other than "
                            f"{MANIFEST} and {NPZ_NAME})")
    x = _to_uint8(released)
    labels = _labels(y, len(x), len(classes))
    out = Path(out_dir).expanduser().resolve()
    check_target(out)
    try:
        text = json.dumps({**manifest, "format": manifest.get("format", fmt)}, indent=2, default=_json_default)
    except (TypeError, ValueError) as e:
        raise UserError(f"export: manifest is not JSON-serialisable ({e})") from None

    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it private; an export is meant to be shared
    except OSError as e:
        raise UserError(f"export: cannot create {out}: {e.strerror or e}") from None
    old = None
    try:
        (_write_png if fmt == "png" else _write_npz)(stage, x, labels, classes)
        for name, data in extra_files.items():
            (stage / name).write_bytes(data)
        tmp = stage / (MANIFEST + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, stage / MANIFEST)  # the manifest is the last file of a complete export
        check_target(out)  # nothing appeared there meanwhile
        if out.is_dir() and any(out.iterdir()):  # a previous export: move it aside, then replace it
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, old / "export")
        elif out.is_dir():
            out.rmdir()
        os.replace(stage, out)
    except OSError as e:
        raise UserError(f"export: writing {out} failed: {e.strerror or e}") from None
    finally:
        if old is not None and not out.exists() and (old / "export").exists():
            os.replace(old / "export", out)  # the new export did not land: put the previous one back
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out
