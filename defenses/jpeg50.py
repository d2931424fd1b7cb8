"""ISS JPEG squeezing at a second, milder quality (50): every training image JPEG-compressed at quality 50.

JPEG-10 (`jpeg`) is ISS's published setting; quality 50 keeps more of the image and so more of a
perturbation that survives compression. The verdict's minimum attacker suite asks for JPEG at both
qualities (`certify/verdict.py`, `SUITE`): a poison tuned to survive one quality is still tried at
the other. The codec is `defenses.jpeg.jpeg_compress`.
"""
from __future__ import annotations

from dataclasses import dataclass

from defenses.base import DEFENSES, Defense
from defenses.jpeg import JPEGParams, jpeg_compress


@dataclass
class JPEG50Params(JPEGParams):
    """Quality 50 (validated as `jpeg`'s: an integer in 1..100)."""
    quality: int = 50


@DEFENSES.register("jpeg50", "ISS: JPEG compression at quality 50 of every training image", JPEG50Params)
def make_jpeg50(p: JPEG50Params) -> Defense:
    def prepare(x, y, seed):
        return jpeg_compress(x, p.quality, p.chunk), y

    return Defense("jpeg50", prepare=prepare)
