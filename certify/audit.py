"""`certify audit`: evaluate a dataset someone already protected (no crafting).

The release (any source, `pt:PATH` images alone, or `delta:PATH`, a perturbation of the clean set)
must pair with the clean source image for image (same count, shapes and labels), checked before
anything else. Both are read as given; with `--image-size` both (and the test set) are resized for
the evaluation, but the perturbation is measured on the images as given when each release image has
its clean twin's size (resizing changes the perturbation; the audit says so, and says when it had to
measure after resizing). Then the release is looked at as a careful data owner would: the perturbation measured (and held against a declared budget), a release equal to the clean data, and
test images that also occur in the training data (they would overstate what a model learned) are
warned about on stderr and recorded in the report.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from attacks.base import per_image_norm
from certify.cache import tensor_digest
from certify.config import RunConfig
from certify.data import Dataset, load_split
from certify.data.release import load_release
from certify.data.resize import changes, fit
from certify.errors import UserError
from certify.pipeline import begin, evaluate_all
from certify.plan.budgets import parse_budget
from certify.progress import say
from certify.registry import CONTROL

def _digests(x: torch.Tensor) -> list[bytes]:
    """One digest per image of its 8-bit pixels."""
    pixels = torch.round(x * 255).to(torch.uint8).reshape(len(x), -1).numpy()
    return [hashlib.sha256(row.tobytes()).digest() for row in pixels]


def per_image_norms(x_rel, x_clean) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image l-inf and l2 norms of released - clean (tensors, or lists of images paired by index,
    each its own size): `attacks.base.per_image_norm` of each."""
    if isinstance(x_rel, torch.Tensor) and isinstance(x_clean, torch.Tensor):
        delta = x_rel - x_clean
        return per_image_norm(delta, "linf"), per_image_norm(delta, "l2")
    pairs = [(r - c).unsqueeze(0) for r, c in zip(x_rel, x_clean)]  # a batch of one image each
    return (torch.cat([per_image_norm(d, "linf") for d in pairs]),
            torch.cat([per_image_norm(d, "l2") for d in pairs]))


def measure_release(linf: torch.Tensor, l2: torch.Tensor, declared: dict | None) -> tuple[dict, list[str]]:
    """The release's budget section and the warnings about it, from its per-image norms."""
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
                        f"{declared['epsilon']:.5g} ({over} of {len(linf)} images over it)")
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


def _same_sizes(x_rel, x_clean) -> bool:
    if isinstance(x_rel, torch.Tensor) and isinstance(x_clean, torch.Tensor):
        return x_rel.shape == x_clean.shape
    return all(r.shape == c.shape for r, c in zip(x_rel, x_clean))


def audit(cfg: RunConfig, release: str, command: str, budget: str | None = None) -> tuple[dict, Path]:
    if cfg.test is None:
        raise UserError("audit needs --test: a clean test source disjoint from the release")
    declared = parse_budget(budget) if budget else None
    size = cfg.image_size
    # clean and release as given (a folder's may differ in size): the perturbation is measured on them
    given_clean, y_clean, classes = load_split(cfg.dataset, cfg.data_root, cfg.download, cfg.seed, mixed_ok=True)
    given_rel, y_rel = load_release(release, given_clean, y_clean, cfg.data_root, cfg.download, cfg.seed)
    x_test, y_test, test_classes = load_split(cfg.test, cfg.data_root, cfg.download, cfg.seed, image_size=size)
    if len(given_rel) != len(given_clean):
        raise UserError(f"release {release!r} has {len(given_rel)} images but clean {cfg.dataset!r} has "
                        f"{len(given_clean)}")
    if not torch.equal(y_rel, y_clean):
        bad = int((y_rel != y_clean).nonzero()[0, 0])
        raise UserError(f"release and clean labels differ (first at image {bad}): they must pair image for image")
    x_clean = fit(given_clean, size, f"clean {cfg.dataset!r}")
    x_rel = fit(given_rel, size, f"release {release!r}")
    if x_test.shape[1:] != x_clean.shape[1:] or len(test_classes) != len(classes):
        raise UserError(f"test source {cfg.test!r} does not match the clean images (shape or class count)")
    if x_rel.shape[1:] != x_clean.shape[1:]:
        hint = "; give --image-size S to resize both" if x_rel.shape[1] == x_clean.shape[1] else ""
        raise UserError(f"release images are {tuple(x_rel.shape[1:])} but clean images are "
                        f"{tuple(x_clean.shape[1:])}{hint}")
    as_given = _same_sizes(given_rel, given_clean)
    head, warnings = measure_release(*per_image_norms(*((given_rel, given_clean) if as_given else (x_rel, x_clean))),
                                     declared)
    head["measured_on"] = "images as given" if as_given else f"images resized to {size}x{size}"
    if changes(given_clean, size) or changes(given_rel, size):
        warnings.insert(0, f"images resized to {size}x{size} (shorter side, centre crop, antialiased): resizing changes "
                        f"the perturbation, so the models train on a filtered copy of the release, not on what was "
                        f"published; " + ("the budget is measured on the images as given" if as_given else
                                          "release and clean images differ in size, so the budget is measured "
                                          "after resizing"))
    del given_rel, given_clean
    warnings += overlap_warning(x_test, [x_clean, x_rel])
    if release.strip().startswith("delta:"):
        say("release = clean + the perturbation file, clipped to [0, 1] and rounded to 8 bits")
    say(f"release vs clean ({head['measured_on']}): per-image l-inf max {head['measured_linf_max'] * 255:.2f}/255, "
        f"mean {head['measured_mean'] * 255:.2f}/255; l2 max {head['measured_l2_max']:.3f}")
    for w in warnings:
        print(f"certify: warning: {w}", file=sys.stderr, flush=True)
    data = Dataset(cfg.dataset, x_clean, y_clean, x_test, y_test, classes, size)
    out, ctx, t0 = begin(cfg, command, f"auditing {release}", data)
    clean = ctx.graph.const(f"release-{tensor_digest(x_clean)}", {"released": x_clean})
    given = ctx.graph.const(f"release-{tensor_digest(x_rel)}", {"released": x_rel})
    poisons = ([{"name": CONTROL, "release": clean, "head": {"budget": {"norm": "none", "epsilon": 0.0,
                                                                        "measured": 0.0}}}] if cfg.baseline else [])
    poisons.append({"name": "release", "release": given, "head": {"budget": head}})
    return evaluate_all(ctx, out, command, lambda rep: ({"clean_release": clean}, poisons), t0, warnings), out
