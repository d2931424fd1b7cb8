"""Progress bars on stderr (tqdm), silenced by `--quiet` (`quiet=True` in Python) through one switch."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def progress(iterable=None, **kwargs):
    # bars only on a terminal: in logs (CI) the one-line stage messages from `say` are the progress
    return tqdm(iterable, disable=_quiet or not sys.stderr.isatty(), file=sys.stderr, leave=False,
                dynamic_ncols=True, **kwargs)


def say(message: str) -> None:
    """One line of progress on stderr (stdout is kept for results and `--json`)."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)
