"""ISS JPEG squeezing (Liu et al., ICML 2023): every training image JPEG-compressed at quality 10.

Applied once to the whole training set (`prepare`); images go through 8-bit storage and back, so
the result stays in [0, 1] on the 1/255 grid. Works for 1- and 3-channel images of any size.

The codec is Pillow's libjpeg (baseline, 4:2:0, the standard quality tables): the same bytes as
torchvision's `transforms.v2.functional.jpeg` (tests/test_defenses.py compares them), without
importing torchvision, whose import pulls in torch._dynamo: ~150 MiB and ~1 s in every process
that registers the defenses.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from certify.errors import UserError
from defenses.base import DEFENSES, Defense


@dataclass
class JPEGParams:
    """Published: quality 10 (ISS's JPEG-10)."""
    quality: int = 10
    chunk: int = 1000  # images converted to 8 bits at a time (memory only; no effect on the result)

    def validate(self, where: str) -> None:
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise UserError(f"{where}: quality must be an integer in 1..100, got {self.quality!r}")
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise UserError(f"{where}: chunk must be an integer >= 1, got {self.chunk!r}")


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """One H x W x C uint8 image (C = 1 or 3), encoded at `quality` and decoded."""
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf, formats=["JPEG"]) as im:
        return np.asarray(im).reshape(image.shape)


def jpeg_compress(x: torch.Tensor, quality: int = 10, chunk: int = 1000) -> torch.Tensor:
    """x (N x C x H x W in [0, 1], C = 1 or 3) JPEG-encoded at `quality` and decoded, as float32."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"defense jpeg: needs N x C x H x W images with 1 or 3 channels, got {tuple(x.shape)}")
    out = torch.empty_like(x, dtype=torch.float32)
    for i in range(0, len(x), chunk):
        u8 = (x[i:i + chunk].detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
        coded = np.stack([_jpeg_roundtrip(a, quality) for a in u8.permute(0, 2, 3, 1).numpy()])
        out[i:i + chunk] = torch.from_numpy(coded).permute(0, 3, 1, 2).to(out.device, torch.float32) / 255
    return out


@DEFENSES.register("jpeg", "ISS: JPEG compression at quality 10 of every training image", JPEGParams)
def make_jpeg(p: JPEGParams) -> Defense:
    def prepare(x, y, seed):
        return jpeg_compress(x, p.quality, p.chunk), y

    return Defense("jpeg", prepare=prepare)
