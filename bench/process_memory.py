"""Run a command; print each process of its tree at its own peak RSS, by role, and the tree's peak.

usage: python bench/process_memory.py [--every S] -- COMMAND [ARGS...]
Samples /proc every 0.2 s (Linux only). A Ray process is named by its role (raylet, gcs_server,
dashboard, monitor, log_monitor, agents, workers by the function they run), with its resident
memory split as the kernel counts it (anon, file: shared libraries, shmem: Ray's object store) at
its own peak, and what it held when the tree peaked (the per-process peaks need not coincide).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def snapshot() -> dict[int, tuple[int, int, str]]:
    procs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * PAGE
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/status") as f:
                kinds = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)
                         if k in ("RssAnon", "RssFile", "RssShmem")}
        except (OSError, IndexError, ValueError):
            continue
        procs[int(pid)] = (ppid, rss, args, kinds)
    return procs


def tree(procs, root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, *_) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def role(args: str, root_pid: int, pid: int) -> str:
    if pid == root_pid:
        return "driver"
    for name in ("raylet", "gcs_server", "dashboard_agent", "runtime_env_agent", "log_monitor", "monitor.py",
                 "dashboard.py"):
        if name in args:
            return name
    m = re.match(r"(ray::\S+)", args)
    if m:
        return m.group(1)
    if "default_worker.py" in args:
        return "ray::IDLE (default_worker)"
    return args[:60]


def main(argv: list[str]) -> int:
    every = 0.2
    if argv[:1] == ["--every"]:
        every, argv = float(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    start = time.monotonic()
    proc = subprocess.Popen(argv)
    peaks: dict[int, tuple[int, str, dict]] = {}  # pid -> (peak rss, role, its anon/file/shmem then)
    tree_peak, at_peak = 0, {}
    while proc.poll() is None:
        procs = snapshot()
        pids = tree(procs, proc.pid)
        total = 0
        for pid in pids:
            _, rss, args, kinds = procs[pid]
            total += rss
            if args and rss >= peaks.get(pid, (0,))[0]:  # a process that is exiting has no args
                peaks[pid] = (rss, role(args, proc.pid, pid), kinds)
        if total > tree_peak:
            tree_peak, at_peak = total, {pid: procs[pid][1] for pid in pids}
        time.sleep(every)
    wall = time.monotonic() - start
    mib = 2 ** 20
    print(f"{'role':<28} {'pid':>7} {'peak':>6} {'anon':>6} {'file':>6} {'shmem':>6} {'at tree peak':>13}  MiB",
          file=sys.stderr)
    for pid, (rss, r, kinds) in sorted(peaks.items(), key=lambda kv: -kv[1][0]):
        print(f"{r[:28]:<28} {pid:>7} {rss / mib:>6.0f} {kinds.get('RssAnon', 0) / mib:>6.0f} "
              f"{kinds.get('RssFile', 0) / mib:>6.0f} {kinds.get('RssShmem', 0) / mib:>6.0f} "
              f"{at_peak.get(pid, 0) / mib:>13.0f}", file=sys.stderr)
    print(f"process-memory: wall {wall:.1f} s, tree peak {tree_peak / mib:.0f} MiB, processes {len(peaks)}",
          file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
