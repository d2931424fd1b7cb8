"""Seed pools for the evidence measurements (reports/POISONS.md, "Seeds and intervals"), on datasets with
a split of their own (cifar10-mini): a seeded split (digits) differs per seed, so nothing would be reused.

Each set is a poison list, a range of seeds and run flags. Every (set, seed) is one serial
`certify run` at that seed, all of them in parallel processes sharing one cache; then one
`certify run --seeds K` per set assembles the K-seed report from the cache (replicate i of a K-seed
run at seed 0 has exactly the keys of a single run at seed i, so nothing runs again). This spreads
seeds over every core of a machine without Ray (the accelerator machine has none).

    python bench/seed_pool.py --jobs 16 --cache /tmp/c --out /tmp/pool [--only table,pool8,literature] [--work DIR]

Writes OUT/SET.json (the K-seed report) and OUT/log.txt. Sets: `table` (MI-UE, EM, PUE, random
and the clean control, 5 seeds, certified with 1000 draws), `pool8` (MI-UE and EM at 8/255, 10
seeds, accuracies only: the gate's false-alarm pool), `pool4`, `pool2` (MI-UE at 4/255 and
2/255, 6 seeds each: the gate's power).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ACCURACIES_ONLY = ["--skip", "certify,scores,recovery"]
SETS = {
    "table": {"poisons": "miue,em,pue,random", "seeds": 5, "args": ["--samples", "1000", "--skip", "scores,recovery"]},
    # the pools run on CPU cores (their spread is the CPU's, as in CI) beside the table on a GPU, where there is one
    "pool8": {"poisons": "miue,em", "seeds": 10, "args": ACCURACIES_ONLY, "cpu": True},
    "pool4": {"poisons": "miue", "seeds": 6, "args": ACCURACIES_ONLY, "epsilon": 4 / 255, "cpu": True},
    "pool2": {"poisons": "miue", "seeds": 6, "args": ACCURACIES_ONLY, "epsilon": 2 / 255, "cpu": True},
    # the literature table (reports/POISONS.md): every poison, 3 seeds, every stage, the default defenses;
    # split per poison, after the clean control of each seed (which every poison's run shares)
    "literature": {"poisons": "all", "seeds": 3, "args": ["--samples", "1000"], "split": True},
}


def command(name: str, spec: dict, seed: int, seeds: int, work: Path, cache: Path, extra: list[str],
            poisons: str | None = None) -> list[str]:
    poisons = poisons or spec["poisons"]
    cmd = ["env", *(["CUDA_VISIBLE_DEVICES="] if spec.get("cpu") else []), sys.executable, "-m", "certify.cli",
           "--quiet", "run", "--poison", poisons, "--seed", str(seed),
           "--seeds", str(seeds), "--executor", "serial", "--cache-dir", str(cache),
           "--out", str(work / f"{name}-{poisons.replace(',', '+')}-{seed}-{seeds}"), *spec["args"]]
    if "epsilon" in spec:
        config = work / f"{name}.yaml"
        config.write_text(json.dumps({"poison_params": {p: {"epsilon": spec["epsilon"]}
                                                        for p in spec["poisons"].split(",")}}))
        cmd += ["--config", str(config)]
    return cmd + extra


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, help="where the single-seed runs go (default OUT/runs)")
    ap.add_argument("--only", default=",".join(SETS))
    ap.add_argument("--extra", default="", help="flags added to every run (a smoke test: --dataset digits ...)")
    args = ap.parse_args()
    work = args.work or args.out / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sets = {n: SETS[n] for n in args.only.split(",")}
    log = open(args.out / "log.txt", "a")
    extra = args.extra.split()

    def run(cmd: list[str]) -> float:
        t = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True)
        took = time.time() - t
        print(f"{took:7.1f} s rc {res.returncode}: {' '.join(cmd)}", file=log, flush=True)
        if res.returncode:
            print(res.stderr[-2000:], file=log, flush=True)
        return took

    t0 = time.time()
    def names(spec: dict) -> list[str]:
        if spec["poisons"] != "all":
            return spec["poisons"].split(",")
        from attacks.base import POISONS
        return [n for n in POISONS.names() if n != "none"]

    # a split set runs its clean control per seed first, then each poison alone: the control's work
    # is done once per seed, not once per process
    control = [command(n, s, seed, 1, work, args.cache, extra, "none")
               for n, s in sets.items() if s.get("split") for seed in range(s["seeds"])]
    units = [command(n, s, seed, 1, work, args.cache, extra, p if s.get("split") else None)
             for n, s in sets.items() for seed in range(s["seeds"])
             for p in (names(s) if s.get("split") else [None])]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, control))
        list(pool.map(run, units))
    print(f"seeds: {len(units)} runs in {time.time() - t0:.1f} s wall", file=log, flush=True)
    for n, s in sets.items():
        run(command(n, s, 0, s["seeds"], work, args.cache, extra))
        shutil.copy(work / f"{n}-{s['poisons'].replace(',', '+')}-0-{s['seeds']}" / "report.json",
                    args.out / f"{n}.json")
    print(f"total {time.time() - t0:.1f} s wall", file=log, flush=True)


if __name__ == "__main__":
    main()
