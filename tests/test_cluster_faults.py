"""Clusters that do not answer: a refused --address and one that accepts connections but never
speaks Ray are one line each, within the timeout, and leave nothing behind; a local instance
leaves no Ray process running after the run."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from certify.cli import main

# the fault cases need a run, not the default's defenses and independent models
ARGS = ["run", "--dataset", "digits", "--poison", "random", "--samples", "20", "--skip", "scores,recovery",
        "--defense", "none", "--independent-models", "0"]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_refused_address_is_one_line_and_writes_nothing(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    code = main(ARGS + ["--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "out"),
                        "--cache-dir", str(tmp_path / "cache")])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and f"127.0.0.1:{port}" in line and "does not answer" in line
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "out").exists()


def test_malformed_address_is_one_line(tmp_path, capsys):
    code = main(ARGS + ["--address", "no-port-here", "--out", str(tmp_path / "out")])
    assert code == 2 and "HOST:PORT" in _one_line(capsys.readouterr().err)


@pytest.mark.slow
def test_silent_cluster_times_out_with_one_line(tmp_path):
    """A port that accepts TCP but never answers as Ray: the join would wait forever."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    conns = []
    threading.Thread(target=lambda: [conns.append(server.accept()) for _ in range(64)], daemon=True).start()
    port = server.getsockname()[1]
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", "import certify.cli as c; c.entry()", *ARGS, "--address", f"127.0.0.1:{port}",
                          "--connect-timeout", "4", "--out", str(tmp_path / "out"), "--cache-dir",
                          str(tmp_path / "cache")], capture_output=True, text=True, timeout=120)
    server.close()
    assert res.returncode == 2
    line = _one_line(res.stderr)
    assert f"127.0.0.1:{port}" in line and "within 4 s" in line
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_no_ray_process_outlives_a_local_run(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "certify.cli", "--quiet", *ARGS, "--workers", "1", "--out",
                             str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    # a local instance's processes name their session folder after the driver's process id
    session = re.compile(rb"session_[0-9_-]+_%d\b" % proc.pid)
    time.sleep(2)
    left = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and session.search((p / "cmdline").read_bytes()):
                left.append(p.name)
        except OSError:
            continue
    assert left == [], f"Ray processes still running after the run: {left}"
