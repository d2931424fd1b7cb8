"""Intra-class covariance of features (the MI-UE paper's second analysis), as pure functions of arrays.

The MI-UE paper argues that a poison works by lowering the mutual information between clean and
poisoned features, and relates that MI to the intra-class covariance of the *poisoned training
features*: the features the protected model extracts from its own poisoned training images. Its
reference point is the clean model's features of the clean training images. We measure both on the
same seeded training images as the MI gap:

    spread(Z, y) = mean over classes k of tr Cov({z_i / ||z_i||_2 : y_i = k})      (within-class)
    total(Z)     = tr Cov({z_i / ||z_i||_2})                                        (all images)

with population covariances (1/n: mean squared distances of unit feature vectors to their centre).
For unit vectors tr Cov = 1 - ||mean||^2, so both lie in [0, 1]: 0 when the vectors collapse to one
direction. The L2 normalisation makes them scale-free.

    covariance score(P) = spread(poisoned features) / spread(clean features)

A score below 1 says the poisoned features sit closer together within each class, and it cannot say
why: a model whose features all collapse toward one direction lowers every class's spread without
separating the classes. So beside it the within / total ratio of each model: spread / total, the
share of the feature variance left inside the classes (near 1: the classes are not apart at all,
toward 0: tight, separated classes). The paper's claim, tighter classes, is a lower ratio for the
poisoned features, not only a lower score. A zero feature vector (a dead ReLU layer) stays zero
after normalisation; classes with fewer than two images are left out (no spread to measure).
"""
from __future__ import annotations

import numpy as np

MIN_CLASS = 2  # images a class needs for a covariance


def _unit_rows(features) -> np.ndarray:
    z = np.asarray(features, dtype=np.float64)
    z = z.reshape(len(z), -1)
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return np.divide(z, norm, out=np.zeros_like(z), where=norm > 0)


def class_spread(features, labels) -> float:
    """Mean over classes (with >= 2 images) of the trace of the population covariance of the class's
    L2-normalised feature rows; nan when no class has two images."""
    z = _unit_rows(features)
    y = np.asarray(labels).ravel()
    if len(z) != len(y):
        raise ValueError(f"class_spread: {len(z)} feature rows vs {len(y)} labels")
    traces = [float(np.sum(np.var(z[y == k], axis=0))) for k in np.unique(y) if np.sum(y == k) >= MIN_CLASS]
    return float(np.mean(traces)) if traces else float("nan")


def total_spread(features) -> float:
    """Trace of the population covariance of all L2-normalised feature rows; nan for fewer than 2 rows."""
    z = _unit_rows(features)
    return float(np.sum(np.var(z, axis=0))) if len(z) >= MIN_CLASS else float("nan")


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _ratio(within: float, total: float) -> float | None:
    return float(within / total) if np.isfinite(within) and np.isfinite(total) and total > 0 else None


def covariance_section(clean_features, protected_features, labels) -> dict:
    """The report's `covariance` section for one poison: within-class spreads (score = their ratio,
    null with the reason when the clean spread is 0 or no class has two images), total spreads and
    the within / total ratio of each model. Row i of both feature arrays is training image i (clean
    for the clean model, as released for the protected one), with label labels[i]."""
    clean = class_spread(clean_features, labels)
    protected = class_spread(protected_features, labels)
    total_clean, total_protected = total_spread(clean_features), total_spread(protected_features)
    reason = None
    if not np.isfinite(clean):
        reason = f"no class has {MIN_CLASS} images"
    elif clean == 0:
        reason = "the clean model's features of every class point one way (spread 0)"
    return {
        "score": None if reason else protected / clean, "score_null_reason": reason,
        "clean": _num(clean), "protected": _num(protected),
        "total_clean": _num(total_clean), "total_protected": _num(total_protected),
        "total_score": _ratio(total_protected, total_clean),
        "within_total_clean": _ratio(clean, total_clean), "within_total_protected": _ratio(protected, total_protected),
        "images": int(len(np.asarray(labels).ravel())), "images_from": "training",
        "definition": ("mean over classes of the trace of the class covariance (1/n) of L2-normalised "
                       "penultimate features of training images: the protected model's features of its "
                       "poisoned training images over the clean model's features of the clean ones; "
                       "within / total: that spread over the trace of the covariance of all the images' "
                       "features (lower: tighter classes relative to the whole)"),
    }
