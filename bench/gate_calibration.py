"""How often `certify check` raises a false alarm, and how often it catches a weaker poison, on real
per-seed accuracies (reports/BENCHMARKS.md, "The gate's error rates").

Input: a folder of single-seed runs (bench/seed_pool.py's `runs/`: SET-SEED-1/report.json). K-seed
reports are put together from them exactly as a run with `--seeds K` does (certify.replicates.combine
of the per-seed sections), then judged by the gate's own `compare`:

- false alarms: every ordered pair of disjoint K-seed subsets of the `pool8` seeds (same code, same
  budget, different seeds), per poison; a pair is a false alarm when any of its rows is WEAKER;
- power: every pair of a `pool8` K-seed subset (8/255, the baseline) and a disjoint `pool4` or
  `pool2` subset (MI-UE at 4/255 or 2/255, the report), MI-UE only.

Beside them, the single-seed gate (K = 1 against K = 1) on every ordered pair of distinct seeds, and
the tolerance-only rule the gate had before (weaker when the accuracy rose by more than 0.02).

    python bench/gate_calibration.py UNITS_DIR [--k 3] [--alpha 0.05] [--tolerance 0.02] > out.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from certify.gate import FAILING, compare
from certify.replicates import combine


def load_units(folder: Path) -> dict[str, dict[int, dict]]:
    """{set: {seed: single-seed report}}."""
    out: dict[str, dict[int, dict]] = {}
    for path in sorted(folder.glob("*-*-1/report.json")):
        name = path.parent.name.rsplit("-", 2)[0]
        report = json.loads(path.read_text())
        out.setdefault(name, {})[report["seed"]] = report
    return out


def assemble(units: dict[int, dict], seeds: tuple[int, ...], poisons: list[str]) -> dict:
    """The report a run with these seeds would write (the replicate parts the gate reads)."""
    first = units[seeds[0]]
    doc = {"dataset": first["dataset"], "poisons": {}}
    n_test = first["dataset"]["n_test"]
    for name in poisons:
        sections = [{k: v for k, v in units[s]["poisons"][name].items() if k != "replicates"} for s in seeds]
        doc["poisons"][name] = combine(sections, list(seeds), n_test, alpha=0.01)
    return doc


def failed(baseline: dict, report: dict, alpha: float, tolerance: float, poison: str) -> bool:
    return any(r.verdict in FAILING for r in compare(baseline, report, tolerance, alpha) if r.poison == poison)


def rate(pairs, units_a, units_b, poison: str, alpha: float, tolerance: float) -> dict:
    hits = total = 0
    for a, b in pairs:
        base, rep = assemble(units_a, a, [poison]), assemble(units_b, b, [poison])
        hits += failed(base, rep, alpha, tolerance, poison)
        total += 1
    return {"pairs": total, "failed": hits, "rate": hits / total if total else None}


def old_rule(units_a, units_b, pairs, poison: str, tolerance: float) -> dict:
    """The gate before replicates: weaker when protected or peak accuracy rose by more than the tolerance."""
    hits = 0
    for (a,), (b,) in pairs:
        ea, eb = units_a[a]["poisons"][poison]["empirical"], units_b[b]["poisons"][poison]["empirical"]
        hits += any(eb[f] - ea[f] > tolerance + 1e-9 for f in ("protected_accuracy", "peak_protected_accuracy"))
    return {"pairs": len(pairs), "failed": hits, "rate": hits / len(pairs)}


def disjoint_pairs(seeds_a, seeds_b, k: int):
    return [(a, b) for a in itertools.combinations(sorted(seeds_a), k) for b in itertools.combinations(sorted(seeds_b), k)
            if not set(a) & set(b)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("units", type=Path)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--tolerance", type=float, default=0.02)
    args = ap.parse_args()
    sets = load_units(args.units)
    same = sets["pool8"]
    out = {"k": args.k, "alpha": args.alpha, "tolerance": args.tolerance,
           "seeds": {name: sorted(units) for name, units in sets.items()}, "false_alarms": {}, "power": {}}
    per_seed = {name: {p: [units[s]["poisons"][p]["empirical"]["protected_accuracy"] for s in sorted(units)]
                       for p in units[min(units)]["poisons"]} for name, units in sets.items()}
    out["protected_accuracy_per_seed"] = per_seed
    for poison in ("miue", "em"):
        pairs = disjoint_pairs(same, same, args.k)
        singles = disjoint_pairs(same, same, 1)
        out["false_alarms"][poison] = {
            f"k{args.k}": rate(pairs, same, same, poison, args.alpha, args.tolerance),
            "k1": rate(singles, same, same, poison, args.alpha, args.tolerance),
            "k1_tolerance_only": old_rule(same, same, singles, poison, args.tolerance)}
        print(f"false alarms {poison}: {out['false_alarms'][poison]}", file=sys.stderr)
    for weaker in ("pool4", "pool2"):
        if weaker not in sets:
            continue
        pairs = disjoint_pairs(same, sets[weaker], args.k)
        singles = disjoint_pairs(same, sets[weaker], 1)
        out["power"][weaker] = {f"k{args.k}": rate(pairs, same, sets[weaker], "miue", args.alpha, args.tolerance),
                                "k1": rate(singles, same, sets[weaker], "miue", args.alpha, args.tolerance),
                                "k1_tolerance_only": old_rule(same, sets[weaker], singles, "miue", args.tolerance)}
        print(f"power {weaker}: {out['power'][weaker]}", file=sys.stderr)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
