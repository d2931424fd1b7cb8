"""Certified learnability of `none`, `random` and `miue` over a grid of sigma (the informative-
certificates issue): which sigma the auto rule picks, and what each sigma would certify.

    python bench/sigma_table.py [--samples 1000] [--out /tmp/sigma-table] [--cache-dir DIR]

One `certify run --poison miue,random --sigma S --skip scores,recovery` per sigma (the clean control
`none` is on by default), sharing one cache, so crafting and the victims are computed once. Each
run's N draws are re-summarised at q = 0.5 and 0.9 and eta/sigma = 0.1 and 0.5 with
certify.bounds (the same draws for both q, as a user would get from two runs with the same seed).
The auto rule's choice is read from a run with `--sigma auto`, whose draws at that sigma are equal to
the fixed-sigma run's (the rule's own draws come from a separate seed stream).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from certify.certificate import bounds
from certify.cli import main as certify
from certify.certificate.config import SIGMA_GRID

POISONS = ("none", "random", "miue")
Q = (0.5, 0.9)
ETA_SIGMA = (0.1, 0.5)


def run(out: Path, cache: str, sigma: str, samples: int) -> dict:
    code = certify(["--quiet", "run", "--poison", "miue,random", "--sigma", sigma, "--samples", str(samples),
                    "--skip", "scores,recovery", "--out", str(out), "--cache-dir", cache])
    if code != 0:
        raise SystemExit(f"certify run --sigma {sigma} exited {code}")
    return json.loads((out / "report.json").read_text())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--out", default="/tmp/sigma-table")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    root = Path(args.out)
    cache = args.cache_dir or str(root / "cache")
    auto = run(root / "auto", cache, "auto", args.samples)
    rule = auto["poisons"]["none"]["certificate"]["sigma_rule"]
    print(f"auto rule: sigma = {auto['poisons']['none']['certificate']['sigma']:g}; tried "
          + ", ".join(f"{t['sigma']:g} -> median ratio {t['median_ratio']:.3f}" for t in rule["tried"]))
    cols = [(q, e) for q in Q for e in ETA_SIGMA]
    print("\n| σ | poison | empirical accuracy | " + " | ".join(f"q={q}, η/σ={e}" for q, e in cols) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in cols) + " |")
    for sigma in SIGMA_GRID:
        rep = run(root / f"sigma-{sigma:g}", cache, str(sigma), args.samples)
        for p in POISONS:
            section = rep["poisons"][p]
            cells = []
            for q, e in cols:
                v = bounds.summarize(section["certificate"]["draws"], q, 0.01, sigma, [e])["curve"][0]["learnability"]
                cells.append("abstains" if v is None else f"{v:.3f}")
            print(f"| {sigma:g} | {p} | {section['empirical']['protected_accuracy']:.3f} | " + " | ".join(cells) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
