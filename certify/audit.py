"""`certify audit`: evaluate a dataset someone already protected (no crafting).

The release must pair with the clean source image for image (same count, shapes and labels),
checked before anything else. Then the release is looked at as a careful data owner would: the
perturbation measured (and held against a declared budget), a release equal to the clean data, and
test images that also occur in the training data (they would overstate what a model learned) are
warned about on stderr and recorded in the report.
"""
from __future__ import annotations

import hashlib
import sys
from fractions import Fraction
from pathlib import Path

import torch

from certify.cache import tensor_digest
from certify.config import RunConfig
from certify.data import Dataset, load_split
from certify.errors import UserError
from certify.pipeline import begin, evaluate_all
from certify.progress import say

NORMS = ("linf", "l2")


def parse_budget(spec: str) -> dict:
    """`linf:8/255` or `l2:0.5` -> {"norm", "epsilon"}."""
    norm, _, value = spec.partition(":")
    try:
        eps = float(Fraction(value.strip())) if value.strip() else -1.0
    except (ValueError, ZeroDivisionError, OverflowError):
        eps = -1.0
    if norm not in NORMS or not 0 < eps < float("inf"):
        raise UserError(f"--budget {spec!r}: expected NORM:VALUE with NORM one of {', '.join(NORMS)} and a "
                        "positive VALUE such as 8/255 or 0.5")
    return {"norm": norm, "epsilon": eps}


def _digests(x: torch.Tensor) -> list[bytes]:
    """One digest per image of its 8-bit pixels."""
    pixels = torch.round(x * 255).to(torch.uint8).reshape(len(x), -1).numpy()
    return [hashlib.sha256(row.tobytes()).digest() for row in pixels]


def measure_release(x_rel: torch.Tensor, x_clean: torch.Tensor, declared: dict | None) -> tuple[dict, list[str]]:
    """The release's budget section and the warnings about it."""
    delta = (x_rel - x_clean).reshape(len(x_rel), -1)
    linf, l2 = delta.abs().amax(1), delta.norm(dim=1)
    measured = {"linf": float(linf.max()), "l2": float(l2.max())}
    norm = declared["norm"] if declared else "linf"
    budget = {"norm": norm, "epsilon": declared["epsilon"] if declared else measured["linf"],
              "measured": measured[norm], "measured_linf_max": measured["linf"], "measured_mean": float(linf.mean()),
              "measured_l2_max": measured["l2"], "measured_l2_mean": float(l2.mean()),
              "declared": bool(declared)}
    warnings = []
    if measured["linf"] == 0:
        warnings.append("the release equals the clean data: no image carries a perturbation")
    elif declared and measured[norm] > declared["epsilon"] + 1e-6:
        over = int(((linf if norm == "linf" else l2) > declared["epsilon"] + 1e-6).sum())
        warnings.append(f"the measured {norm} perturbation {measured[norm]:.5g} exceeds the declared budget "
                        f"{declared['epsilon']:.5g} ({over} of {len(x_rel)} images over it)")
    return budget, warnings


def overlap_warning(x_test: torch.Tensor, trains: list[torch.Tensor]) -> list[str]:
    seen = set()
    for x in trains:
        seen.update(_digests(x))
    dup = sum(d in seen for d in _digests(x_test))
    if not dup:
        return []
    return [f"{dup} of {len(x_test)} test images also occur in the training data (exact duplicates): "
            "accuracy on them overstates what a model learned"]


def audit(cfg: RunConfig, release: str, command: str, budget: str | None = None) -> tuple[dict, Path]:
    if cfg.test is None:
        raise UserError("audit needs --test: a clean test source disjoint from the release")
    declared = parse_budget(budget) if budget else None
    x_rel, y_rel, _ = load_split(release, cfg.data_root, cfg.download, cfg.seed)
    x_clean, y_clean, classes = load_split(cfg.dataset, cfg.data_root, cfg.download, cfg.seed)
    x_test, y_test, test_classes = load_split(cfg.test, cfg.data_root, cfg.download, cfg.seed)
    if x_test.shape[1:] != x_clean.shape[1:] or len(test_classes) != len(classes):
        raise UserError(f"test source {cfg.test!r} does not match the clean images (shape or class count)")
    if len(x_rel) != len(x_clean):
        raise UserError(f"release {release!r} has {len(x_rel)} images but clean {cfg.dataset!r} has {len(x_clean)}")
    if x_rel.shape[1:] != x_clean.shape[1:]:
        raise UserError(f"release images are {tuple(x_rel.shape[1:])} but clean images are {tuple(x_clean.shape[1:])}")
    if not torch.equal(y_rel, y_clean):
        bad = int((y_rel != y_clean).nonzero()[0, 0])
        raise UserError(f"release and clean labels differ (first at image {bad}): they must pair image for image")
    head, warnings = measure_release(x_rel, x_clean, declared)
    warnings += overlap_warning(x_test, [x_clean, x_rel])
    say(f"release vs clean: per-image l-inf max {head['measured_linf_max'] * 255:.2f}/255, "
        f"mean {head['measured_mean'] * 255:.2f}/255; l2 max {head['measured_l2_max']:.3f}")
    for w in warnings:
        print(f"certify: warning: {w}", file=sys.stderr, flush=True)
    data = Dataset(cfg.dataset, x_clean, y_clean, x_test, y_test, classes)
    out, ctx, t0 = begin(cfg, command, f"auditing {release}", data)
    clean = ctx.graph.const(f"release-{tensor_digest(x_clean)}", {"released": x_clean})
    given = ctx.graph.const(f"release-{tensor_digest(x_rel)}", {"released": x_rel})
    releases = ([("none", clean)] if cfg.baseline else []) + [("release", given)]
    heads = {"none": {"budget": {"norm": "none", "epsilon": 0.0, "measured": 0.0}}, "release": {"budget": head}}
    return evaluate_all(ctx, out, command, releases, heads, clean, t0, warnings), out
