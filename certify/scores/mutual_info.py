"""Sliced mutual information between clean and poisoned features (MI-UE paper's analysis).

SI(X; Y) = E over random unit directions theta, phi of I(theta^T X; phi^T Y) (Goldfeld & Greenewald,
NeurIPS 2021), estimated with m projection pairs and a 1-D estimator: KSG (Kraskov et al. 2004,
estimator 1, max-norm, k = 3) as the estimate and a plug-in histogram (equal-width bins) as the check.

Protocol (a documented reconstruction; the paper's is not public): n seeded, stratified training
images (the same indices for every poison of the run); "clean features" are the clean model's
penultimate features of the clean images x_i, "poisoned features" the protected model's features of
its own released images x_i + delta_i, the data it was trained on; both L2-normalised. SI(none) =
SI(clean; clean) is the estimator's ceiling, SI(P) = SI(clean; poisoned), MI gap(P) = SI(none) - SI(P).
Training images, not test images: the accuracy drop is measured on the test images with the same
protected model, so an MI gap on them would largely restate the drop; the paper's claim concerns the
features of the poisoned training data. The projection directions depend only on (seed, feature
dims), so every poison of a run shares them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import digamma
from scipy.spatial import cKDTree
from torch import nn

from certify.errors import UserError
from certify.seeding import derive, stratified_draw
from certify.validation import check_at_most, check_choice, check_positive

MAX_BINS = 1024  # the histogram check is bins x bins cells per projection
MAX_PROJECTIONS = 10_000  # each projection pair is one MI estimate over the images

ESTIMATORS = ("ksg", "histogram")


@dataclass
class MIConfig:
    projections: int = 128  # m projection pairs (theta, phi)
    images: int = 1000  # n training images (all when fewer); the covariance score uses the same ones
    k: int = 3  # KSG neighbours
    bins: int = 32  # histogram bins per axis (equal width)
    estimator: str = "ksg"  # ksg | histogram: the headline estimate (the other is reported as the check)

    def validate(self, where: str = "mi") -> None:
        check_positive(where, **{"mi.projections": self.projections, "mi.images": self.images,
                                 "mi.k": self.k, "mi.bins": self.bins})
        for name in ("projections", "images", "k", "bins"):
            if not isinstance(getattr(self, name), int):
                raise UserError(f"{where}: mi.{name} must be an integer, got {getattr(self, name)!r}")
        if self.bins < 2:
            raise UserError(f"{where}: mi.bins must be >= 2, got {self.bins!r}")
        check_at_most(where, MAX_BINS, **{"mi.bins": self.bins})
        check_at_most(where, MAX_PROJECTIONS, **{"mi.projections": self.projections})
        if self.k >= self.images:  # KSG needs more images than neighbours (and sizes images x k distances)
            raise UserError(f"{where}: mi.k ({self.k}) must be smaller than mi.images ({self.images})")
        check_choice(where, "mi.estimator", self.estimator, ESTIMATORS)


def ksg_1d(a, b, k: int = 3, seed: int = 0) -> float:
    """KSG estimator 1 of I(a; b) in nats for two 1-D samples of equal length (max-norm).

    eps_i = max-norm distance to the k-th neighbour in the joint space; n_a(i), n_b(i) count the other
    points strictly closer than eps_i in each marginal; I = psi(k) + psi(N) - <psi(n_a + 1) + psi(n_b + 1)>.
    Ties (repeated values) are broken by a seeded jitter of 1e-10 times each variable's spread.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    n = len(a)
    if n != len(b) or n <= k:
        raise ValueError(f"ksg_1d: need equal lengths > k (got {len(a)}, {len(b)}, k={k})")
    rng = np.random.default_rng(seed)
    a = a + 1e-10 * (np.std(a) or 1.0) * rng.standard_normal(n)
    b = b + 1e-10 * (np.std(b) or 1.0) * rng.standard_normal(n)
    joint = np.stack([a, b], axis=1)
    dist, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf)
    eps = dist[:, -1]
    na = _count_strict(a, eps)
    nb = _count_strict(b, eps)
    return float(digamma(k) + digamma(n) - np.mean(digamma(na + 1) + digamma(nb + 1)))


def _count_strict(v: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """For each i, the number of j != i with |v_j - v_i| < eps_i (sorted search)."""
    s = np.sort(v)
    hi = np.searchsorted(s, v + eps, side="left")
    lo = np.searchsorted(s, v - eps, side="right")
    return (hi - lo - 1).astype(np.float64)


def hist_1d(a, b, bins: int = 32) -> float:
    """Plug-in MI in nats from a bins x bins histogram with equal-width bins over each variable's range."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    p = joint / joint.sum()
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / (pa @ pb)[nz])))


def directions(seed: int, dim_x: int, dim_y: int, projections: int) -> tuple[np.ndarray, np.ndarray]:
    """m unit directions theta (m x dim_x) and, independently, phi (m x dim_y); depend only on the args."""
    rng = np.random.default_rng(derive(seed, "sliced-mi", dim_x, dim_y))
    theta = rng.standard_normal((projections, dim_x))
    phi = rng.standard_normal((projections, dim_y))
    return (theta / np.linalg.norm(theta, axis=1, keepdims=True),
            phi / np.linalg.norm(phi, axis=1, keepdims=True))


def sliced_mi(fx, fy, projections: int = 128, seed: int = 0, estimator: str = "ksg", k: int = 3,
              bins: int = 32) -> float:
    """Sliced MI of paired feature rows fx (n x dx), fy (n x dy): rows L2-normalised, mean 1-D MI over pairs."""
    fx = F.normalize(torch.as_tensor(fx, dtype=torch.float64), dim=1).numpy()
    fy = F.normalize(torch.as_tensor(fy, dtype=torch.float64), dim=1).numpy()
    if len(fx) != len(fy):
        raise ValueError(f"sliced_mi: {len(fx)} vs {len(fy)} rows")
    theta, phi = directions(seed, fx.shape[1], fy.shape[1], projections)
    pa, pb = fx @ theta.T, fy @ phi.T  # n x m
    if estimator == "ksg":
        vals = [ksg_1d(pa[:, j], pb[:, j], k, seed=j) for j in range(projections)]
    elif estimator == "histogram":
        vals = [hist_1d(pa[:, j], pb[:, j], bins) for j in range(projections)]
    else:
        raise UserError(f"mi.estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    return float(np.mean(vals))


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Penultimate features (model.features) in eval mode, on the CPU; the model's mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model.features(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)]
    model.train(was_training)
    return torch.cat(out).flatten(1)


def paired_features(clean_model: nn.Module, protected_model: nn.Module, x_clean: torch.Tensor,
                    x_released: torch.Tensor, y: torch.Tensor, cfg: MIConfig,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean model's features of x_clean, protected model's features of x_released, labels) of the
    run's MI images: x_clean and x_released are the clean and the released training images, paired
    by index, with labels y.

    `seed` is the run seed: the images (derive(seed, "mi-images")) are the same for every poison of the
    run; the `none` control passes protected_model = clean_model (and its release, the clean images)
    and gets the clean features twice.
    """
    if len(x_clean) != len(x_released) or len(x_clean) != len(y):
        raise ValueError(f"paired_features: {len(x_clean)} clean vs {len(x_released)} released images, "
                         f"{len(y)} labels")
    idx, _ = stratified_draw(y, cfg.images, derive(seed, "mi-images"), "mi.images")
    fc = features(clean_model, x_clean[idx])
    fp = fc if protected_model is clean_model else features(protected_model, x_released[idx])
    return fc, fp, y[idx]


def mi_from_features(fc: torch.Tensor, fp: torch.Tensor, cfg: MIConfig, seed: int) -> dict:
    """The report's `mutual_information` section from paired features; the projection directions
    (derive(seed, "mi-projections"), `seed` the run seed) are shared by every poison of the run."""
    pseed = derive(seed, "mi-projections")
    other = "histogram" if cfg.estimator == "ksg" else "ksg"
    est = {}
    for name in (cfg.estimator, other):
        kw = dict(projections=cfg.projections, seed=pseed, estimator=name, k=cfg.k, bins=cfg.bins)
        est[name] = (sliced_mi(fc, fc, **kw), sliced_mi(fc, fp, **kw))
    clean, protected = est[cfg.estimator]
    hc, hp = est["histogram"]
    n = len(fc)
    return {
        "estimator": cfg.estimator, "projections": cfg.projections, "images": int(n),
        "clean": clean, "protected": protected, "gap": clean - protected,
        "histogram_clean": hc, "histogram_protected": hp, "histogram_gap": hc - hp,
        "ksg_clean": est["ksg"][0], "ksg_protected": est["ksg"][1], "ksg_gap": est["ksg"][0] - est["ksg"][1],
        "k": cfg.k, "bins": cfg.bins, "bin_rule": "equal-width",
        "images_from": "training",
        "protocol": (f"sliced MI over {cfg.projections} shared random projection pairs between the clean "
                     f"model's L2-normalised penultimate features of {n} seeded stratified clean training "
                     f"images and the protected model's features of the same images as released (the "
                     f"poisoned images it was trained on); gap = SI(clean model with itself) - "
                     f"SI(clean, poisoned); the test images of the accuracy drop are not used"),
        "note": "a faithful reconstruction; the paper's exact protocol is not public",
    }


def mi_section(clean_model: nn.Module, protected_model: nn.Module, x_clean: torch.Tensor,
               x_released: torch.Tensor, y: torch.Tensor, cfg: MIConfig, seed: int) -> dict:
    """The report's `mutual_information` section for one poison (the `none` control: protected = clean,
    released = clean)."""
    fc, fp, _ = paired_features(clean_model, protected_model, x_clean, x_released, y, cfg, seed)
    return mi_from_features(fc, fp, cfg, seed)
