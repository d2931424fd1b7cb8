"""Intra-class covariance of features (the MI-UE paper's second analysis), as pure functions of arrays.

The MI-UE paper argues that a poison works by lowering the mutual information between clean and
poisoned features, and relates that MI to the intra-class covariance of features. We measure, on the
same clean test images as the MI gap, how spread out each class is in the feature space of the
protected model beside the clean model:

    spread(Z, y) = mean over classes k of tr Cov({z_i / ||z_i||_2 : y_i = k})

with the population covariance (1/n_k: the mean squared distance of a class's unit feature vectors to
their centre). For unit vectors tr Cov_k = 1 - ||mean_k||^2, so spread lies in [0, 1]: 0 when every class
collapses to one direction, near 1 when its directions scatter evenly. The L2 normalisation makes
it scale-free (a model that multiplies its features by a constant has the same spread), and the
score divides two models' spreads on the same images:

    covariance score(P) = spread(protected model's features) / spread(clean model's features)

1 for the clean control; above 1 when the protected model separates the classes of clean images less
tightly than the clean model does. A zero feature vector (a dead ReLU layer) stays zero after
normalisation; classes with fewer than two images are left out (no spread to measure).
"""
from __future__ import annotations

import numpy as np

MIN_CLASS = 2  # images a class needs for a covariance


def class_spread(features, labels) -> float:
    """Mean over classes (with >= 2 images) of the trace of the population covariance of the class's
    L2-normalised feature rows; nan when no class has two images."""
    z = np.asarray(features, dtype=np.float64)
    z = z.reshape(len(z), -1)
    y = np.asarray(labels).ravel()
    if len(z) != len(y):
        raise ValueError(f"class_spread: {len(z)} feature rows vs {len(y)} labels")
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    z = np.divide(z, norm, out=np.zeros_like(z), where=norm > 0)
    traces = [float(np.sum(np.var(z[y == k], axis=0))) for k in np.unique(y) if np.sum(y == k) >= MIN_CLASS]
    return float(np.mean(traces)) if traces else float("nan")


def covariance_section(clean_features, protected_features, labels) -> dict:
    """The report's `covariance` section for one poison: both spreads and their ratio (null, with the
    reason, when the clean spread is 0 or no class has two images)."""
    clean = class_spread(clean_features, labels)
    protected = class_spread(protected_features, labels)
    reason = None
    if not np.isfinite(clean):
        reason = f"no class has {MIN_CLASS} images"
    elif clean == 0:
        reason = "the clean model's features of every class point one way (spread 0)"
    return {
        "score": None if reason else protected / clean, "score_null_reason": reason,
        "clean": None if not np.isfinite(clean) else clean,
        "protected": None if not np.isfinite(protected) else protected,
        "images": int(len(np.asarray(labels).ravel())),
        "definition": ("mean over classes of the trace of the class covariance (1/n) of L2-normalised "
                       "penultimate features of clean test images; score = protected model / clean model"),
    }
