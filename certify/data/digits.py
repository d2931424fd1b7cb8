"""`digits`: scikit-learn's bundled handwritten digits (1,797 images, 8×8, one channel, 10 classes)."""
from __future__ import annotations

import numpy as np
import torch

from certify.data._common import DATASETS, Source


@DATASETS.register("digits", "scikit-learn's bundled 8x8 handwritten digits: 1,797 images, 1 channel, 10 classes "
                   "(split 80/20 by seed)", kind="dataset")
def load(data_root=None, download=False) -> Source:
    from sklearn.datasets import load_digits

    d = load_digits()
    # values 0..16 -> nearest point of the 1/255 grid, so released images survive 8-bit storage
    levels = np.rint(d.images.astype(np.float64) * 255.0 / 16.0).astype(np.uint8)
    x = torch.from_numpy(levels).unsqueeze(1).to(torch.float32) / 255.0
    y = torch.as_tensor(d.target, dtype=torch.int64)
    return Source([str(c) for c in d.target_names], x, y)
