"""The stage graph side by side: whole `certify run` commands, each with an empty cache, under
`../shared/tools/peak` (wall time and peak memory of the whole process tree, Ray's processes
included). Reports each case's wall time, peak, per-stage task seconds, the busiest moment's task
count, and the ratios asked for: serial / default, and parallel efficiency 1 vs 2 workers.

usage: python bench/graph_scaling.py [--cases main-serial,main-default,...] [--out FILE.json] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK = ROOT.parent / "shared" / "tools" / "peak"
MAIN = ["--poison", "miue", "--samples", "1000"]
MULTI = ["--poison", "miue,em,random", "--defense", "jpeg,grayscale", "--samples", "1000"]
CASES = {
    "main-serial": MAIN + ["--executor", "serial"],
    "main-default": MAIN,
    "main-threads2": MAIN + ["--threads", "2"],  # one two-thread task at a time instead of two one-thread tasks
    "multi-workers1": MULTI + ["--workers", "1"],
    "multi-workers2": MULTI + ["--workers", "2"],
}


def overlap(tasks: list[dict]) -> int:
    """The most tasks running at one moment."""
    events = sorted([(t["start"], 1) for t in tasks] + [(t["end"], -1) for t in tasks])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def run_case(name: str, args: list[str], keep: Path | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        cmd = [sys.executable, str(PEAK), "--", str(Path(sys.executable).with_name("certify")), "--quiet", "run",
               *args, "--out", str(tmp / "out"), "--cache-dir", str(tmp / "cache")]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"{name} failed: {res.stderr[-2000:]}")
        m = re.search(r"peak: wall ([\d.]+) s, tree RSS (\d+) MiB, processes (\d+)", res.stderr)
        report = json.loads((tmp / "out" / "report.json").read_text())
        tasks = report["execution"]["tasks"]
        row = {"command": "certify run " + " ".join(args), "wall_s": float(m[1]), "peak_mib": int(m[2]),
               "processes": int(m[3]), "timings": report["timings"], "tasks": len(tasks),
               "max_parallel_tasks": overlap(tasks),
               "protected_accuracy": {p: s["empirical"]["protected_accuracy"] for p, s in report["poisons"].items()}}
        if keep:
            shutil.copytree(tmp / "out", keep / name, dirs_exist_ok=True)
        print(f"{name:>15}: wall {row['wall_s']:7.1f} s, peak {row['peak_mib']:5d} MiB, "
              f"{row['tasks']} tasks, at most {row['max_parallel_tasks']} at once", flush=True)
        return row
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", help="write the rows as JSON")
    ap.add_argument("--keep", type=Path, help="copy each case's report folder under this folder")
    a = ap.parse_args()
    rows = {name: run_case(name, CASES[name], a.keep) for name in a.cases.split(",")}
    if "main-serial" in rows and "main-default" in rows:
        rows["ratio_main_serial_over_default"] = rows["main-serial"]["wall_s"] / rows["main-default"]["wall_s"]
    if "main-threads2" in rows and "main-default" in rows:
        rows["ratio_main_threads2_over_default"] = rows["main-threads2"]["wall_s"] / rows["main-default"]["wall_s"]
    if "multi-workers1" in rows and "multi-workers2" in rows:
        rows["parallel_efficiency_2_workers"] = rows["multi-workers1"]["wall_s"] / (2 * rows["multi-workers2"]["wall_s"])
    text = json.dumps(rows, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
