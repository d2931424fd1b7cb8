"""`folder:PATH`: one subfolder of images per class (sorted folder names give the label order).

Images are PNG, JPEG, WebP, BMP, GIF or TIFF (`FORMATS`; first frame), read with Pillow; other
formats are never handed to Pillow's other plugins. Grayscale images (modes 1, L, LA) stay one
channel when every image is grayscale; otherwise every image becomes RGB (alpha dropped). Hidden
files (names starting with '.') are skipped; anything else must be an image.

Sizes: with `image_size` S each image is resized to S×S as it is read (`resize`); without it the
images must share one size, except where `mixed_ok` (an audit reading images as given) asks for a
list of images of any sizes. Limits (`_common`): images at most `MAX_SIDE` pixels per side (checked
from each header before it is decoded) and the decoded set, counted as the float32 RGB set it becomes, at most `MAX_BYTES`.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from certify.data._common import Source, check_bytes, check_side, uint8_to_tensor
from certify.data.resize import resize_uint8
from certify.errors import UserError

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")  # Pillow's names
GRAY_MODES = {"1", "L", "LA"}
COLOR_MODES = {"RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _read(path: Path) -> np.ndarray:
    """uint8 H×W×1 (grayscale) or H×W×3."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow only warns (on stderr) between its limit and twice it: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path, formats=FORMATS)
        with im:
            check_side(im.height, im.width, str(path))  # from the header, before decoding
            im.load()  # decode now: a truncated file fails here
            mode = im.mode
            if mode not in GRAY_MODES and mode not in COLOR_MODES:
                raise UserError(f"{path}: unsupported image mode {mode} (use 8-bit grayscale or RGB)")
            a = np.array(im.convert("L" if mode in GRAY_MODES else "RGB"), dtype=np.uint8)
            return a[..., None] if a.ndim == 2 else a
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{path}: image too large to decode ({_one_line(e)})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: unreadable or truncated image, or not one of {', '.join(FORMATS)} "
                        f"({_one_line(e)})") from None


def _files(root: Path, where: str) -> tuple[list[tuple[Path, int]], list[str]]:
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
            if not p.is_file():  # a FIFO would block the read, a device never end it
                raise UserError(f"{p}: not a regular file (a FIFO, a device, a broken link) inside class folder "
                                f"{cls!r} (expected images only)")
        if not entries:
            raise UserError(f"{root / cls}: empty class folder (every class needs at least one image)")
        files += [(p, label) for p in entries]
    if len(classes) < 2:
        raise UserError(f"{where}: {root} has only one class folder ({classes[0]!r}); at least 2 classes are needed")
    return files, classes


def image_paths(root: str | Path, where: str) -> list[Path]:
    """The image files of a folder source relative to it (class folder / file name), in the order
    `read_folder` reads them (an audit pairs a folder release with a folder clean set by them)."""
    root = Path(root).expanduser()
    return [p.relative_to(root) for p, _ in _files(root, where)[0]]


def read_folder(root: str | Path, where: str, image_size: int | None = None, mixed_ok: bool = False):
    """Images, int64 labels and class names of an image folder. The images are float32 N×C×H×W on the
    1/255 grid, or (only where `mixed_ok` and their sizes differ) a list of C×H×W."""
    files, classes = _files(Path(root).expanduser(), where)
    n = len(files)
    images, first, total = [], None, 0
    for p, _ in files:
        a = _read(p)
        if image_size is not None:
            a = resize_uint8(torch.from_numpy(a).permute(2, 0, 1)[None], image_size)[0].permute(1, 2, 0).numpy()
        h, w = a.shape[:2]
        if first is None:
            first = (p, w, h)
            if not mixed_ok:  # every image must have this size: the set's size is known before the rest is decoded
                check_bytes(n * w * h * 3 * 4, f"{where}: {n} images of {w}x{h}x3 as float32")
        elif (w, h) != first[1:]:
            if not mixed_ok:
                raise UserError(f"{p}: image size {w}x{h} differs from {first[1]}x{first[2]} of {first[0]} (all "
                                f"images must have the same size; give --image-size S to resize every image to S×S)")
        total += w * h * 3 * 4  # counted as the float32 RGB set they become
        check_bytes(total, f"{where}: the images up to {p} as float32")
        images.append(a)
    if any(a.shape[-1] == 3 for a in images):  # one colour image makes the set RGB (as Pillow's L -> RGB)
        images = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in images]
    y = torch.as_tensor([label for _, label in files], dtype=torch.int64)
    if len({a.shape for a in images}) == 1:
        return uint8_to_tensor(np.stack(images)), y, classes
    return [uint8_to_tensor(a[None])[0] for a in images], y, classes


def load_folder(path: str, where: str, image_size: int | None = None, mixed_ok: bool = False) -> Source:
    x, y, classes = read_folder(path, where, image_size, mixed_ok)
    return Source(classes, x, y)
