"""The output directory of a run: `--out` checked before any work, created once every input loaded,
`run.json` (what `--resume` compares) written then."""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from certify.config import RunConfig, to_dict
from certify.errors import UserError
from certify.files import atomic_write, read_small_text


MAX_CHECKPOINT_BYTES = 2**20  # run.json holds one configuration
# what a run or a plan writes in --out: name -> whether it is a folder (checked before any work)
OUTPUTS = {"run.json": False, "report.json": False, "report.md": False, "report.html": False, "plan.json": False,
           "plan.md": False, "plan.html": False, "figures": True}


def check_out(cfg: RunConfig) -> Path:
    """Check --out before any work, writing nothing: with --resume the stored configuration must
    match; otherwise it must not hold a run, and the folder must be creatable."""
    out = Path(cfg.out) if cfg.out else Path("reports/runs") / (
        datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + "-".join(cfg.poisons)[:60])
    stored = out / "run.json"
    resolved = comparable(cfg)
    if cfg.resume:
        if not stored.is_file():
            raise UserError(f"--resume: {out} holds no interrupted run (no run.json)")
        try:
            previous = json.loads(read_small_text(stored, MAX_CHECKPOINT_BYTES, "--resume: checkpoint"))["config"]
        except (ValueError, KeyError, TypeError, RecursionError):  # not JSON, or JSON of another shape
            previous = None
        if not isinstance(previous, dict):
            raise UserError(f"--resume: {stored} is not a run checkpoint of this tool")
        if previous != resolved:
            changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
            raise UserError(f"--resume: {out} was started with another configuration "
                            f"(differs in: {', '.join(changed)})")
    elif stored.exists() or (out / "report.json").exists():
        raise UserError(f"output directory {out} already holds a run; use --resume or another --out")
    for name, folder in OUTPUTS.items():  # found only once the work is done, it would cost the whole run
        p = out / name
        if (p.exists() or p.is_symlink()) and p.is_dir() != folder:
            raise UserError(f"output directory {out}: {name} is a {'folder' if p.is_dir() else 'file'} (or a link, "
                            f"FIFO or device) where a run writes its {'folder' if folder else 'file'}; remove it or "
                            f"use another --out")
    existing = next(p for p in [out, *out.absolute().parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        reason = "Not a directory" if not existing.is_dir() else "Permission denied"
        raise UserError(f"output directory {out} is not writable: {reason}")
    return out


def create_out(out: Path) -> None:
    """--out, made once every input has been read and checked (bad input leaves nothing behind)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory {out} is not writable: {e.strerror}") from None


def mark_started(out: Path, cfg: RunConfig, command: str) -> None:
    """run.json (what --resume checks), written once the inputs loaded, so bad input locks nothing."""
    record = {"config": comparable(cfg), "command": command}
    atomic_write(out / "run.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))


def comparable(cfg: RunConfig) -> dict:
    """The configuration that determines the results (not where they go or how they are resumed)."""
    d = to_dict(cfg)
    for k in ("out", "resume", "cache_dir", "executor", "workers", "address", "gpu_fraction", "connect_timeout",
              "verdict"):
        d.pop(k)  # where results go, how tasks are spread and how the report judges them do not change them
    return json.loads(json.dumps(d))
