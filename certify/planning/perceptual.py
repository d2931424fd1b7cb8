"""How visible a release is: its perturbation's norms and its PSNR and SSIM against the clean images
(scikit-image's implementations), as one cached task per release."""
from __future__ import annotations

import numpy as np
import torch

from attacks.base import per_image_norm
from certify.context import ModelSpec, RunContext, Slice, images
from certify.data import Dataset

SSIM_WINDOW = 7  # scikit-image's default window; smaller images use their largest odd side


def distances(clean: torch.Tensor, released: torch.Tensor) -> dict:
    """Norms of released - clean per image (max and mean), PSNR of the whole release (its mean
    squared error over every pixel; None when the release equals the clean images, where PSNR is
    infinite) and the mean per-image SSIM. Images are N x C x H x W in [0, 1]."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    delta = released - clean
    linf, l2 = per_image_norm(delta, "linf"), per_image_norm(delta, "l2")
    a, b = clean.numpy().astype(np.float64), released.numpy().astype(np.float64)
    side = min(a.shape[2:])
    window = min(SSIM_WINDOW, side if side % 2 else side - 1)
    ssim = [structural_similarity(x, y, data_range=1.0, channel_axis=0, win_size=window) for x, y in zip(a, b)]
    same = bool(torch.equal(clean, released))
    return {"linf_max": float(linf.max()), "linf_mean": float(linf.mean()),
            "l2_max": float(l2.max()), "l2_mean": float(l2.mean()),
            "psnr": None if same else float(peak_signal_noise_ratio(a, b, data_range=1.0)),
            "ssim": float(np.mean(ssim))}


def perceptual_task(data: Dataset, released: dict, *, model: ModelSpec, device: str) -> dict:
    return distances(data.x_train, images(released["released"]))


def add(ctx: RunContext, keys: dict) -> dict:
    """One task per release (on the CPU: it compares pixels)."""
    return {"perceptual": ctx.cached("perceptual", {}, perceptual_task, (ctx.data_key, keys["release"]),
                                     poison=keys["name"], cpu_only=True)}


def section(ctx: RunContext, keys: dict, values: dict) -> dict:
    return {"perceptual": values[keys["perceptual"]]}


SLICE = Slice("perceptual", add, section)  # a slice of `certify plan` only
