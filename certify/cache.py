"""A content-addressed cache of artifacts (released data, weights, draws).

Each artifact is keyed by a hash of exactly the configuration that determines it and written
atomically (`certify.files.atomic_write`), so an interrupted run never leaves half an artifact and any
run that needs the same artifact reuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import torch

from certify.errors import UserError
from certify.files import atomic_write


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "certify"


def key_of(kind: str, spec: Any) -> str:
    text = json.dumps(spec, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def tensor_digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
        h.update(str(tuple(t.shape)).encode())
    return h.hexdigest()[:20]


class Cache:
    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root else default_cache_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cache directory {self.root} cannot be created: {e.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise UserError(f"cache directory {self.root} is not writable")

    def path(self, key: str, suffix: str) -> Path:
        return self.root / key[: key.index("-")] / f"{key}{suffix}"

    def load(self, key: str) -> dict[str, Any] | None:
        """The artifact `key` (torch.load of tensors and plain values: a dict, as every task makes), or
        None if absent, corrupt or not a dict. What it holds is checked by its task (`Task.accept`)."""
        p = self.path(key, ".pt")
        try:
            mode = p.lstat().st_mode
        except OSError:  # absent (or a path the filesystem refuses)
            return None
        if stat.S_ISLNK(mode) and not p.is_file():  # a dangling link or a loop: replaced by the next save
            return None
        if not p.is_file():  # a folder or a FIFO under an artifact's name: opening a FIFO waits forever
            _remove(p)
            return None
        try:
            value = torch.load(p, weights_only=True)
        except Exception:
            value = None
        if not isinstance(value, dict):
            p.unlink(missing_ok=True)  # a corrupt artifact is rebuilt, never trusted
            return None
        return value

    def save(self, key: str, value: dict[str, Any]) -> None:
        p = self.path(key, ".pt")
        if p.is_dir() and not p.is_symlink():  # os.replace cannot put a file where a folder is
            _remove(p)
        atomic_write(p, lambda tmp: torch.save(value, tmp))


def _remove(p: Path) -> None:
    """Whatever is at `p` (inside the cache, under an artifact's name): a folder with what it holds."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)
