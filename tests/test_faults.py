"""Faults survived: a Ray worker killed mid-certification, the whole run killed and resumed, and an
output directory that cannot be written (refused before any work)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from certify import device as devices
from certify import execution
from certify.cache import Cache
from certify.cli import main
from certify.models import build_model

TINY = "train: {epochs: 2}\nsurrogate: {epochs: 1}\nsmoothing: {chunk: 10, sigma_draws: 5}\n"


def console() -> list[str]:
    script = Path(sys.executable).with_name("certify")
    return [str(script)] if script.exists() else [sys.executable, "-m", "certify.cli"]


def _one_cpu():
    """Pin a child to one CPU: the pipeline then trains with one thread, like the in-process runs below
    (thread count can change float reductions, and it is not part of the cache keys)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


@pytest.fixture
def one_thread(monkeypatch):
    monkeypatch.setattr(devices, "default_threads", lambda: 1)


@pytest.fixture(scope="module")
def job(digits):
    model = build_model("cnn", digits.shape, digits.num_classes, seed=3)
    return execution.DrawJob("cnn", digits.shape, digits.num_classes, model.state_dict(), 0.05, 11,
                             digits.x_test, digits.y_test, eval_batch=100, draws_per_pass=1, threads=1)


@pytest.mark.slow
def test_ray_worker_killed_mid_certification(job, tmp_path, ray_local, monkeypatch):
    n, chunk, doomed = 60, 10, 20
    serial = execution.map_draws(job, n, chunk, executor="serial", workers=1, address=None,
                                 cache=Cache(tmp_path / "serial"), key="draws-fault")
    marker = str(tmp_path / "worker-died-once")

    class DiesOnce(execution.Evaluator):
        """Inside the Ray worker: kills its own process the first time it sees chunk `doomed`.
        Defined in the test function, so Ray ships it by value (closure included)."""

        def run(self, start, stop):
            if start == doomed and not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                os._exit(1)  # no cleanup, no exception: the process is gone
            return super().run(start, stop)

    # `_run_ray` builds its actors from the module's `Evaluator`; map_draws takes no evaluator argument
    monkeypatch.setattr(execution, "Evaluator", DiesOnce)
    cache = Cache(tmp_path / "ray")
    on_ray = execution.map_draws(job, n, chunk, executor="ray", workers=2, address=None, cache=cache,
                                 key="draws-fault")
    assert os.path.exists(marker), "the worker never died: the fault was not injected"
    assert int(Path(marker).read_text()) != os.getpid()  # it died in a worker, not here
    assert np.array_equal(on_ray, serial)
    saved = sorted(p.name for p in cache.path("draws-fault", "").glob("*.npy"))
    assert saved == [f"{lo:07d}-{min(n, lo + chunk):07d}.npy" for lo in range(0, n, chunk)]


def _chunk_files(cache: Path) -> dict[str, tuple[int, int]]:
    """Finished chunk files of every draws key: name -> (inode, mtime_ns). Temp files are not chunks."""
    out = {}
    for p in (cache / "draws").glob("draws-*/*.npy"):
        if not p.name.startswith("."):
            st = p.stat()
            out[f"{p.parent.name}/{p.name}"] = (st.st_ino, st.st_mtime_ns)
    return out


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing(tmp_path, capsys, one_thread):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    samples = 400
    args = ["--quiet", "run", "--poison", "random", "--no-baseline", "--dataset", "digits", "--config", str(cfg),
            "--samples", str(samples), "--skip", "scores,recovery", "--executor", "serial", "--seed", "3"]
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = subprocess.Popen(console() + args + ["--out", str(out), "--cache-dir", str(cache)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_one_cpu)
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
    real = execution.Evaluator.run

    def counting(self, start, stop):
        calls.append(start)
        return real(self, start, stop)

    execution.Evaluator.run = counting
    try:
        code = main(args + ["--out", str(out), "--cache-dir", str(cache), "--resume"])
    finally:
        execution.Evaluator.run = real
    err = capsys.readouterr().err
    assert code == 0, err
    after = _chunk_files(cache)
    for name, stamp in before.items():
        assert after[name] == stamp, f"{name} was rewritten on resume"
    done_before = {int(n.split("/")[1][:7]) for n in before}
    assert not done_before & set(calls), "finished chunks were recomputed"
    assert len(calls) == samples // 10 - len(before)
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
