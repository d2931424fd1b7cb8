"""Files a user names or is given: reading a small one (a configuration, a report, a run checkpoint)
as a regular file only, its size checked before a byte is read, so /dev/zero, a FIFO or a huge file
is one line, not a hang or an exhausted memory; and writing any output atomically (temp file, then
rename), so an interrupted run never leaves half a file."""
from __future__ import annotations

import json
import os
import sys
import stat
import tempfile
from pathlib import Path
from typing import Callable

from certify.errors import UserError


def read_small_text(path, limit: int, what: str) -> str:
    """The UTF-8 text of `path`; UserError naming `what` and the file unless it is a regular file of
    at most `limit` bytes."""
    p = Path(path)
    try:
        st = os.stat(p)  # follows links: a link to a regular file is read
    except FileNotFoundError:
        raise UserError(f"{what} {p}: no such file") from None
    except OSError as e:  # a name too long, a loop of links
        raise UserError(f"{what} {p}: cannot be read ({e.strerror or type(e).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {p}: is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read, a device never end it
        raise UserError(f"{what} {p}: not a regular file")
    if st.st_size > limit:
        raise UserError(f"{what} {p}: {st.st_size:,} bytes, over the limit of {limit:,}")
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)  # the file may have grown since the check
    except OSError as e:
        raise UserError(f"{what} {p}: cannot be read ({e.strerror or type(e).__name__})") from None
    if len(data) > limit:
        raise UserError(f"{what} {p}: over the limit of {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {p}: not a text (UTF-8) file") from None


def read_json(path, limit: int, what: str):
    """The JSON value of a small file (`read_small_text`); UserError naming the file unless it parses."""
    p = Path(path)
    text = read_small_text(p, limit, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise UserError(f"{p}: not valid JSON (nested too deeply)") from None
    except ValueError:  # json turns digits into an int, and Python refuses overly long ones
        raise UserError(f"{p}: not valid JSON (an integer longer than {sys.get_int_max_str_digits()} digits)") from None


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; reports are read by others, like any file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask
