"""`folder:PATH`: one subfolder of images per class (sorted folder names give the label order).

Every image is read with Pillow and must have the same size. Grayscale images (modes 1, L, LA)
stay one channel when every image is grayscale; otherwise every image is converted to RGB (alpha
dropped). Hidden files (names starting with '.') are skipped; anything else must be an image.
Limits (`_common`): images at most `MAX_SIDE` pixels per side (checked from each header before it
is decoded) and the decoded set, counted as RGB, at most `MAX_BYTES`.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from certify.data._common import Source, check_bytes, check_side, uint8_to_tensor
from certify.errors import UserError

GRAY_MODES = {"1", "L", "LA"}
COLOR_MODES = {"RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _read(path: Path):
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow only warns (on stderr) between its limit and twice it: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            check_side(im.height, im.width, str(path))  # from the header, before decoding
            im.load()  # decode now: a truncated file fails here
            mode = im.mode
            if mode not in GRAY_MODES and mode not in COLOR_MODES:
                raise UserError(f"{path}: unsupported image mode {mode} (use 8-bit grayscale or RGB)")
            gray = mode in GRAY_MODES
            img = im.convert("L" if gray else "RGB")
            return img, gray
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{path}: image too large to decode ({_one_line(e)})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: unreadable or truncated image ({_one_line(e)})") from None


def read_folder(root: str | Path, where: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 N×H×W×C images, int64 labels and class names of an image folder."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"{where}: {root} does not exist")
    if not root.is_dir():
        raise UserError(f"{where}: {root} is not a folder (expected one subfolder of images per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{where}: {root} has no class folders (expected one subfolder of images per class)")
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        entries = sorted(p for p in (root / cls).iterdir() if not p.name.startswith("."))
        for p in entries:
            if p.is_dir():
                raise UserError(f"{p}: unexpected folder inside class folder {cls!r} (expected images only)")
        if not entries:
            raise UserError(f"{root / cls}: empty class folder (every class needs at least one image)")
        files += [(p, label) for p in entries]
    if len(classes) < 2:
        raise UserError(f"{where}: {root} has only one class folder ({classes[0]!r}); at least 2 classes are needed")

    images, grays, size = [], [], None
    for p, _ in files:
        img, gray = _read(p)
        if size is None:
            size, first = img.size, p
            # every image must have this size: the decoded set is known before the rest is decoded
            check_bytes(len(files) * size[0] * size[1] * 3, f"{where}: {len(files)} images of {size[0]}x{size[1]}")
        elif img.size != size:
            raise UserError(f"{p}: image size {img.size[0]}x{img.size[1]} differs from "
                            f"{size[0]}x{size[1]} of {first} (all images must have the same size)")
        images.append(img)
        grays.append(gray)
    if all(grays):
        x = np.stack([np.asarray(im, dtype=np.uint8) for im in images])[..., None]
    else:
        x = np.stack([np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8) for im in images])
    y = np.asarray([label for _, label in files], dtype=np.int64)
    return x, y, classes


def load_folder(path: str, where: str) -> Source:
    x, y, classes = read_folder(path, where)
    return Source(classes, uint8_to_tensor(x), torch.from_numpy(y))
