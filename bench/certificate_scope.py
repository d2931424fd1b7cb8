"""What the certificate covers as σ and the surrogate recipe change (the certificate-scope issue).

    python bench/certificate_scope.py [--subset 1000] [--samples 200] [--reference-draws 1]
        [--grid quick:0.01,...] [--out reports/bench-certificate-scope.json] [--work /tmp/certificate-scope]

On cifar10-mini (a stratified `--subset` of its 5,000 training images, 0: all of them; its 1,000
test images), for MI-UE, OPS and the clean control `none`: one `certify run --poison miue,ops
--skip scores,recovery` per `recipe:σ` of `--grid` (default: both recipes at σ = 0.01, 0.02, 0.05),
in that order, sharing one cache, so crafting and the victims are computed once. The recipes:
- `quick`: the default surrogate (the victim fine-tuned 3 epochs with RWP, 3 levels);
- `reference`: the `reference` profile's surrogate settings (certify/config.py PROFILE_DEFAULTS: from
  scratch, 60 epochs, 6 levels, one step per level, gradients clipped at 5.0) with `--reference-draws`
  draws per level instead of its 10, to fit a CPU; everything else (crafting, victims) stays the
  quick profile's, so only the surrogate differs between the two.
Per run and poison it records the victim's accuracy, the surrogate's, the certified learnability at
η/σ = 0.1, the largest certified η, and the report's `certificate.victims` (the independently
trained victims within that η). Results are written after every run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from certify.config import PROFILE_DEFAULTS, load_config
from certify.curves import point_at
from certify.data import Dataset, load_dataset
from certify.pipeline import begin, evaluate_all, poison_names
from certify.progress import set_quiet
from certify.seeding import derive, stratified_draw

ETA_SIGMA = 0.1


def subset(data: Dataset, size: int, seed: int) -> Dataset:
    """A stratified `size` of the training images (0: all), the test set whole."""
    if not size:
        return data
    idx, _ = stratified_draw(data.y_train, size, derive(seed, "certificate-scope"), "--subset")
    return Dataset(data.name, data.x_train[idx], data.y_train[idx], data.x_test, data.y_test, list(data.classes))


def recipes(reference_draws: int) -> dict[str, dict]:
    return {"quick": {}, "reference": {**PROFILE_DEFAULTS["reference"]["surrogate"], "draws_per_level": reference_draws}}


def row(name: str, section: dict) -> dict:
    cert = section["certificate"]
    v = cert.get("victims") or {}
    return {"poison": name, "protected_accuracy": section["empirical"]["protected_accuracy"],
            "surrogate_accuracy": cert["surrogate_accuracy"],
            "certified": point_at(cert["curve"], ETA_SIGMA)["learnability"],
            "max_certified_eta": cert["max_certified_eta"], "theta_norm": cert["theta_norm"],
            "independent_distance": cert["independent_distance"], "victims_k": v.get("k"),
            "victims_within": v.get("within"), "victim_distances": v.get("distances")}


def run(data: Dataset, recipe: str, surrogate: dict, sigma: float, args, root: Path) -> dict:
    out = root / f"{recipe}-sigma-{sigma:g}"
    cfg = load_config(None, {"poisons": ["miue", "ops"], "sigma": sigma, "samples": args.samples,
                             "skip": ["scores", "recovery"], "executor": "serial", "eta_sigma": [ETA_SIGMA],
                             "surrogate": surrogate, "out": str(out), "cache_dir": str(root / "cache")})
    names = poison_names(cfg)
    t = time.time()
    out, ctx, t0 = begin(cfg, "bench/certificate_scope.py", f"{recipe} surrogate, sigma {sigma:g}", data=data)
    report = evaluate_all(ctx, out, "bench/certificate_scope.py", lambda rep: ({}, [{"name": n} for n in names]), t0)
    return {"recipe": recipe, "surrogate_recipe": report["poisons"]["none"]["certificate"]["surrogate_recipe"],
            "sigma": sigma, "wall_s": round(time.time() - t, 1), "timings": report["timings"],
            "poisons": [row(n, s) for n, s in report["poisons"].items()]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--grid", default=",".join(f"{r}:{s}" for r in ("quick", "reference") for s in (0.01, 0.02, 0.05)))
    ap.add_argument("--reference-draws", type=int, default=1)
    ap.add_argument("--out", default="reports/bench-certificate-scope.json")
    ap.add_argument("--work", default="/tmp/certificate-scope")
    args = ap.parse_args(argv)
    set_quiet(True)
    data = subset(load_dataset("cifar10-mini"), args.subset, 0)
    doc = {"dataset": "cifar10-mini", "n_train": len(data.y_train), "n_test": len(data.y_test),
           "samples": args.samples, "eta_over_sigma": ETA_SIGMA, "q": 0.9, "alpha": 0.01,
           "reference_draws_per_level": args.reference_draws, "runs": []}
    surrogates = recipes(args.reference_draws)
    for cell in args.grid.split(","):
        recipe, sigma = cell.split(":")
        doc["runs"].append(run(data, recipe, surrogates[recipe], float(sigma), args, Path(args.work)))
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
        for r in doc["runs"][-1]["poisons"]:
            print(recipe, sigma, json.dumps({k: v for k, v in r.items() if k != "victim_distances"}), flush=True)


if __name__ == "__main__":
    main()
