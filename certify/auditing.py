"""`certify audit`: evaluate a dataset someone already protected (no crafting).

The release (any source, `pt:PATH` images alone, or `delta:PATH`, a perturbation of the clean set)
must pair with the clean source image for image (same count, shapes and labels; a `folder:` release
pairs by file path or by the index in its file names, `certify.data.release`), checked before
anything else. Both are read as given; with `--image-size` both (and the test set) are resized for
the evaluation, but the perturbation is measured on the images as given when each release image has
its clean twin's size (resizing changes the perturbation; the audit says so, and says when it had to
measure after resizing). Then the release is looked at as a careful data owner would: the
perturbation measured (l-inf, l2 and l0 per image; its spread over the images and the fraction of
images changed, held against a declared `--budget`), a release equal to the clean data or partly
so, and test images that also occur in the training data (they would overstate what a model
learned) are warned about on stderr and recorded in the report.
"""
from __future__ import annotations

import hashlib
import re
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
from certify.planning.budgets import parse_budget
from certify.progress import say
from certify.report.content import in_units
from certify.registry import CONTROL

NORMS = ("linf", "l2", "l0")
PERCENTILES = (0, 25, 50, 75, 100)  # of the per-image norm, in the report's budget section

def _digests(x: torch.Tensor) -> list[bytes]:
    """One digest per image of its 8-bit pixels."""
    pixels = torch.round(x * 255).to(torch.uint8).reshape(len(x), -1).numpy()
    return [hashlib.sha256(row.tobytes()).digest() for row in pixels]


def parse_declared(spec: str) -> dict:
    """`--budget`: `linf:8/255` and `l2:0.5` as `parse_budget` reads them, or `l0:N`, N pixels changed
    per image (OPS: 1), which a plan never varies and so is read here."""
    norm, _, value = spec.partition(":")
    if norm.strip() != "l0":
        try:
            return parse_budget(spec)
        except UserError:
            raise UserError(f"--budget {spec!r}: expected NORM:VALUE, e.g. linf:8/255, l2:0.5 or l0:1 (pixels "
                            "changed per image)") from None
    if not re.fullmatch(r"[0-9]{1,9}", value.strip()) or int(value) < 1:
        raise UserError(f"--budget {spec!r}: an l0 budget is a whole number of pixels changed per image, "
                        "at least 1 (l0:1 for one-pixel shortcuts)")
    return {"norm": "l0", "epsilon": float(int(value))}


def per_image_norms(x_rel, x_clean) -> dict[str, torch.Tensor]:
    """Per-image l-inf, l2 and l0 norms of released - clean (tensors, or lists of images paired by
    index, each its own size): `attacks.base.per_image_norm` of each; l0 counts the pixel positions
    where any channel differs by more than half a gray level."""
    if isinstance(x_rel, torch.Tensor) and isinstance(x_clean, torch.Tensor):
        deltas = [x_rel - x_clean]
    else:
        deltas = [(r - c).unsqueeze(0) for r, c in zip(x_rel, x_clean)]  # a batch of one image each
    return {norm: torch.cat([per_image_norm(d, norm) for d in deltas]) for norm in NORMS}


def measure_release(norms: dict[str, torch.Tensor], declared: dict | None) -> tuple[dict, list[str]]:
    """The release's budget section and the warnings about it, from its per-image norms."""
    linf, l2, l0 = norms["linf"], norms["l2"], norms["l0"]
    norm = declared["norm"] if declared else "linf"
    mine, n = norms[norm], len(linf)
    changed = int((l0 > 0).sum())  # on the 8-bit grid: some pixel moved by at least one level
    levels = torch.tensor(PERCENTILES, dtype=torch.float64) / 100
    # observed values ("lower"): an interpolated median of 0.5 pixels would be no image's
    spread = torch.quantile(mine.double(), levels, interpolation="lower")
    budget = {"norm": norm, "epsilon": declared["epsilon"] if declared else float(linf.max()),
              "measured": float(mine.max()), "measured_linf_max": float(linf.max()), "measured_mean": float(linf.mean()),
              "measured_l2_max": float(l2.max()), "measured_l2_mean": float(l2.mean()),
              "measured_l0_max": float(l0.max()), "declared": bool(declared),
              "changed_fraction": changed / n,
              "per_image_percentiles": {str(p): float(v) for p, v in zip(PERCENTILES, spread)}}
    warnings = []
    if changed == 0:
        warnings.append("the release equals the clean data: no image carries a perturbation")
    elif changed < n:
        warnings.append(f"{n - changed} of {n} released images ({(n - changed) / n:.1%}) equal their clean twin (no "
                        f"pixel differs by half a gray level): they carry no protection")
    if changed and declared and budget["measured"] > declared["epsilon"] + 1e-6:
        over = int((mine > declared["epsilon"] + 1e-6).sum())
        warnings.append(f"the measured {norm} perturbation {in_units(budget['measured'], norm)} exceeds the declared "
                        f"budget {in_units(declared['epsilon'], norm)} ({over} of {n} images over it)")
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
    declared = parse_declared(budget) if budget else None
    size = cfg.image_size
    # clean and release as given (a folder's may differ in size): the perturbation is measured on them
    given_clean, y_clean, classes = load_split(cfg.dataset, cfg.data_root, cfg.download, cfg.seed, mixed_ok=True)
    given_rel, _ = load_release(release, given_clean, y_clean, cfg.data_root, cfg.download, cfg.seed, cfg.dataset)
    x_test, y_test, test_classes = load_split(cfg.test, cfg.data_root, cfg.download, cfg.seed, image_size=size)
    x_clean = fit(given_clean, size, f"clean {cfg.dataset!r}")
    x_rel = fit(given_rel, size, f"release {release!r}")
    if x_test.shape[1:] != x_clean.shape[1:] or len(test_classes) != len(classes):
        raise UserError(f"test source {cfg.test!r} does not match the clean images (shape or class count)")
    if x_rel.shape[1:] != x_clean.shape[1:]:
        hint = "; give --image-size S to resize both" if x_rel.shape[1] == x_clean.shape[1] else ""
        raise UserError(f"release images are {tuple(x_rel.shape[1:])} but clean images are "
                        f"{tuple(x_clean.shape[1:])}{hint}")
    as_given = _same_sizes(given_rel, given_clean)
    head, warnings = measure_release(per_image_norms(*((given_rel, given_clean) if as_given else (x_rel, x_clean))),
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
        f"mean {head['measured_mean'] * 255:.2f}/255; l2 max {head['measured_l2_max']:.3f}; l0 max "
        f"{head['measured_l0_max']:.0f} pixels; {head['changed_fraction']:.1%} of the images changed")
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
