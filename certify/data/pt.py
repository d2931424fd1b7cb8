"""`pt:PATH`: images saved with `torch.save` (read as `arrays` reads `.pt` files: bounded, weights only).

The file holds either a tensor of images, or a dict with `x` (images), `y` (integer labels 0..K-1)
and optionally `classes` (a list of K names). Images are uint8 (0..255) or float in [0, 1] (rounded
onto the 1/255 grid, as 8-bit storage would), shaped N×C×H×W, N×H×W×C or N×H×W (C 1 or 3). Images
without labels are a release only (`certify audit --release pt:PATH`: they pair with the clean set
by order and take its labels); as a dataset the file needs `y`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from certify.data._common import Source, labels_and_classes, pixels_to_grid
from certify.data.arrays import as_nchw, checked, existing_file, read_pt
from certify.errors import UserError

SUFFIXES = (".pt", ".pth")


def read_pt_images(path: str, where: str, like: tuple[int, int, int, int] | None = None):
    """(images float32 N×C×H×W on the grid, labels int64 numpy or None, class names or None).
    `like` (the clean set's N, C, H, W) picks the layout and checks the count."""
    p = existing_file(path, where, SUFFIXES)
    obj = read_pt(p)
    if isinstance(obj, torch.Tensor):
        x, y, names = obj, None, None
    elif isinstance(obj, dict) and isinstance(obj.get("x"), torch.Tensor):
        x, y, names = obj["x"], obj.get("y"), obj.get("classes")
    else:
        keys = f" with keys {', '.join(map(str, obj))}" if isinstance(obj, dict) else ""
        raise UserError(f"{p}: holds a {type(obj).__name__}{keys}; expected a tensor of images, or a dict "
                        f"with x (images), y (labels) and optionally classes")
    xt = pixels_to_grid(as_nchw(checked(x, f"{p}: x"), f"{p}: x", like), f"{p}: x")
    if y is None:
        return xt, None, None
    if not isinstance(y, torch.Tensor):
        raise UserError(f"{p}: y is a {type(y).__name__}; expected a tensor of integer labels")
    if names is not None and not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        raise UserError(f"{p}: classes must be a list of strings")
    y = checked(y, f"{p}: y")
    if y.is_floating_point():  # before numpy, which has no bfloat16
        raise UserError(f"{p}: y has dtype {str(y.dtype).removeprefix('torch.')}; labels must be integers")
    labels, classes = labels_and_classes(y.numpy(), len(xt), names, str(p))
    return xt, labels, classes


def load_pt(path: str, where: str) -> Source:
    x, y, classes = read_pt_images(path, where)
    if y is None:
        raise UserError(f"{where}: {Path(path).name} holds images without labels; as a dataset it needs a dict "
                        f"with x (images) and y (labels) (images alone serve as certify audit --release only)")
    return Source(classes, x, torch.from_numpy(y))
