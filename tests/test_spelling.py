"""One spelling: "defense" (the package is `defenses/`), in code, messages, report keys, docs and paths.

Every file git tracks or would track (so not .git, reports/runs/ or a virtual environment) is read
for the British spelling (written below as a pattern, so this file does not hold it); a hit fails the
test with its file and line, and nothing is exempt.
"""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BRITISH = re.compile("defen[c]e", re.IGNORECASE)


def _repository_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the repository's files cannot be listed")
    return [p for p in out.decode("utf-8").split("\0") if p and (ROOT / p).is_file()]


def test_no_file_or_path_uses_the_british_spelling():
    hits = []
    for rel in _repository_files():
        if BRITISH.search(rel):
            hits.append(f"{rel} (its path)")
        text = (ROOT / rel).read_bytes().decode("utf-8", errors="replace")
        hits += [f"{rel}:{n}" for n, line in enumerate(text.splitlines(), 1) if BRITISH.search(line)]
    assert not hits, f"British spelling in {len(hits)} place(s), write 'defense': " + ", ".join(hits)
