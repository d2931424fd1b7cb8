"""`--image-size S`: every image to S×S (shorter side to S, then a centre crop; antialiased bilinear).

Resizing works on the 8-bit pixels (torchvision's uint8 kernels round as 8-bit storage would), so
the result stays on the 1/255 grid. Images already S×S are left as they are. Without a size,
images of several sizes cannot form one set: `fit` refuses them with one line naming the fix.
"""
from __future__ import annotations

import torch

from certify.data import _common
from certify.errors import UserError

_CHUNK = 256  # images resized at a time (bounds the uint8 copy of a large set)


def resize_uint8(u: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N×C×H×W -> uint8 N×C×S×S (unchanged when already S×S)."""
    from torchvision.transforms.v2 import functional as F

    if tuple(u.shape[-2:]) == (size, size):
        return u
    return F.center_crop(F.resize(u, [size], antialias=True), [size, size])


def _resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return resize_uint8(torch.round(x * 255.0).to(torch.uint8), size).to(torch.float32) / 255.0


def resize_images(x, size: int, where: str) -> torch.Tensor:
    """float32 images on the 1/255 grid (a tensor, or a list of C×H×W of any sizes) -> N×C×S×S; the
    result's size is checked against `_common.MAX_BYTES` before it is allocated (filled in place, chunk by chunk)."""
    if not changes(x, size):
        return x if isinstance(x, torch.Tensor) else torch.stack(x)
    n, c = len(x), int(x[0].shape[-3])
    nbytes, cap = n * c * size * size * 4, _common.MAX_BYTES
    if nbytes > cap:
        raise UserError(f"{where}: --image-size {size} makes {n:,} images of {c}×{size}×{size}, {nbytes:,} bytes as "
                        f"float32, over the limit of {cap:,} bytes; give a smaller --image-size")
    out = torch.empty(n, c, size, size)
    if isinstance(x, torch.Tensor):
        for i in range(0, n, _CHUNK):
            out[i:i + _CHUNK] = _resize_batch(x[i:i + _CHUNK], size)
    else:
        for i, im in enumerate(x):
            out[i] = _resize_batch(im.unsqueeze(0), size)[0]
    return out


def changes(x, size: int | None) -> bool:
    """Whether `resize_images(x, size)` changes any image (some image is not already size×size)."""
    if size is None:
        return False
    if isinstance(x, torch.Tensor):
        return tuple(x.shape[-2:]) != (size, size)
    return any(tuple(im.shape[-2:]) != (size, size) for im in x)


def sizes(x) -> list[tuple[int, int]]:
    """The distinct H×W sizes of a set, in order of first appearance."""
    if isinstance(x, torch.Tensor):
        return [tuple(x.shape[-2:])]
    return list(dict.fromkeys(tuple(im.shape[-2:]) for im in x))


def fit(x, size: int | None, where: str) -> torch.Tensor:
    """One N×C×H×W tensor: resized to size×size when a size is given; else images of one size, as given."""
    if size is not None:
        return resize_images(x, size, where)
    if isinstance(x, torch.Tensor):
        return x
    found = sizes(x)
    if len(found) > 1:
        (h0, w0), (h1, w1) = found[:2]
        raise UserError(f"{where}: images of several sizes ({w0}x{h0}, {w1}x{h1}, ...); give --image-size S "
                        f"to resize every image to S×S (shorter side to S, then a centre crop)")
    return torch.stack(x)
