"""Faults survived: the whole run killed and resumed, and an output directory that cannot be written
(refused before any work). A Ray worker killed mid-task: tests/test_graph.py."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import certify.certificate as cert
from certify.cli import main

TINY = "train: {epochs: 2}\nsurrogate: {epochs: 1}\nsmoothing: {chunk: 10, sigma_draws: 5}\n"


def console() -> list[str]:
    script = Path(sys.executable).with_name("certify")
    return [str(script)] if script.exists() else [sys.executable, "-m", "certify.cli"]


def _chunk_files(cache: Path) -> dict[str, tuple[int, int]]:
    """Finished chunks of draws: name -> (inode, mtime_ns). Temp files are not chunks."""
    out = {}
    for p in (cache / "draws").glob("draws-*.pt"):
        st = p.stat()
        out[p.name] = (st.st_ino, st.st_mtime_ns)
    return out


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    samples = 400
    args = ["--quiet", "run", "--poison", "random", "--no-baseline", "--dataset", "digits", "--config", str(cfg),
            "--samples", str(samples), "--skip", "scores,recovery", "--executor", "serial", "--seed", "3"]
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = subprocess.Popen(console() + args + ["--out", str(out), "--cache-dir", str(cache)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while not _chunk_files(cache):
            assert proc.poll() is None, f"the run ended before any chunk was saved: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no chunk of draws after 300 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _chunk_files(cache)
    assert 1 <= len(before) < samples // 10, "killed too late: every chunk had finished"
    with capsys.disabled():  # shown with -s
        print(f"\nkilled (SIGKILL) with {len(before)} of {samples // 10} chunks saved")
    assert (out / "run.json").is_file() and not (out / "report.json").exists()

    # resume: exit 0, every chunk finished before the kill is reused as it is (same inode, same mtime)
    calls = []
    real = cert.draw_accuracies

    def counting(model, sigma, seed, start, *rest):
        calls.append(start)
        return real(model, sigma, seed, start, *rest)

    monkeypatch.setattr(cert, "draw_accuracies", counting)
    code = main(args + ["--out", str(out), "--cache-dir", str(cache), "--resume"])
    err = capsys.readouterr().err
    assert code == 0, err
    after = _chunk_files(cache)
    for name, stamp in before.items():
        assert after[name] == stamp, f"{name} was rewritten on resume"
    assert len(calls) == samples // 10 - len(before), "finished chunks were recomputed"
    resumed = json.loads((out / "report.json").read_text())

    # an undisturbed run, same seed, fresh out and fresh cache: the same draws
    code = main(args + ["--out", str(tmp_path / "fresh"), "--cache-dir", str(tmp_path / "fresh-cache")])
    assert code == 0, capsys.readouterr().err
    fresh = json.loads((tmp_path / "fresh" / "report.json").read_text())
    a, b = resumed["poisons"]["random"]["certificate"], fresh["poisons"]["random"]["certificate"]
    assert len(a["draws"]) == samples
    assert a["draws"] == b["draws"]
    assert a["curve"] == b["curve"]


def test_read_only_out_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    code = main(["run", "--poison", "random", "--dataset", "digits", "--samples", "20", "--executor", "serial",
                 "--skip", "scores,recovery", "--out", str(blocker / "sub"), "--cache-dir", str(cache)])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not writable" in lines[0] and str(blocker / "sub") in lines[0], err
    assert "Traceback" not in err
    assert elapsed < 10, f"took {elapsed:.1f} s: work was done before --out was checked"
    assert not cache.exists(), "the cache was touched before --out was checked"
    assert blocker.read_text() == "not a folder\n"
