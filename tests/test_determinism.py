"""Determinism: the same command and seed give the same report (fresh caches), and the draws do not
depend on the executor (serial vs Ray with 2 workers)."""
from __future__ import annotations

import json
import shutil
import struct

import pytest

from certify import device as devices
from certify.cli import main

TINY = "train: {epochs: 2}\nsurrogate: {epochs: 1}\nsmoothing: {chunk: 10, sigma_draws: 5}\n"
VOLATILE = ("created", "timings", "command")  # when and how it was asked, not what was computed


@pytest.fixture
def one_thread(monkeypatch):
    # the same thread count for every run here (it can change float reductions; 2 threads on a
    # shared 2-core machine are also many times slower than 1)
    monkeypatch.setattr(devices, "default_threads", lambda: 1)


def _run(tmp_path, capsys, name: str, *extra: str) -> dict:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / name
    code = main(["--quiet", "run", "--poison", "random", "--dataset", "digits", "--config", str(cfg),
                 "--samples", "40", "--skip", "scores,recovery", "--seed", "2", "--out", str(out),
                 "--cache-dir", str(tmp_path / f"{name}-cache"), *extra])
    assert code == 0, capsys.readouterr().err
    return json.loads((out / "report.json").read_text())


def _numbers(report: dict) -> dict:
    r = {k: v for k, v in report.items() if k not in VOLATILE}
    r["config"] = {k: v for k, v in r["config"].items() if k not in ("out", "cache_dir")}
    return r


def _bytes(draws: list[float]) -> bytes:
    return struct.pack(f"<{len(draws)}d", *draws)


@pytest.mark.slow
def test_same_command_same_report_and_ray_equals_serial(tmp_path, capsys, one_thread, ray_local):
    first = _run(tmp_path, capsys, "first", "--executor", "serial")
    second = _run(tmp_path, capsys, "second", "--executor", "serial")
    assert set(first["poisons"]) == {"none", "random"}
    for p in first["poisons"]:
        a, b = first["poisons"][p]["certificate"]["draws"], second["poisons"][p]["certificate"]["draws"]
        assert len(a) == 40 and _bytes(a) == _bytes(b), p
    assert _numbers(first) == _numbers(second)

    # Ray, 2 workers: the first run's cache without its draws, so only the draws are recomputed
    shutil.copytree(tmp_path / "first-cache", tmp_path / "ray-cache", ignore=shutil.ignore_patterns("draws"))
    assert not (tmp_path / "ray-cache" / "draws").exists()
    on_ray = _run(tmp_path, capsys, "ray", "--executor", "ray", "--workers", "2")
    assert on_ray["environment"]["executor"] == "ray" and on_ray["environment"]["workers"] == 2
    for p in first["poisons"]:
        a, b = first["poisons"][p]["certificate"], on_ray["poisons"][p]["certificate"]
        assert _bytes(a["draws"]) == _bytes(b["draws"]), p
        assert a["curve"] == b["curve"]
    assert len(list((tmp_path / "ray-cache" / "draws").glob("draws-*/*.npy"))) == 2 * 4
