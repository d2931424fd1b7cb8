"""Determinism: the same command and seed give the same report (fresh caches), and the draws do not
depend on the executor (serial vs Ray with 2 workers)."""
from __future__ import annotations

import json
import shutil
import struct

import pytest

from certify.cli import main

TINY = "train: {epochs: 2}\nsurrogate: {epochs: 1}\nsmoothing: {chunk: 10, sigma_draws: 5}\n"
VOLATILE = ("created", "timings", "command", "execution")  # when, how and where, not what was computed


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
def test_same_command_same_report_and_ray_equals_serial(tmp_path, capsys, ray_local):
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
    assert len(list((tmp_path / "ray-cache" / "draws").glob("draws-*.pt"))) == 2 * 4
    assert {t["node"] for t in on_ray["execution"]["tasks"]} != {"driver"}
    assert _numbers(on_ray)["poisons"] == _numbers(first)["poisons"]


@pytest.mark.slow
def test_ray_with_one_worker_gives_the_serial_report(tmp_path, capsys):
    """A fresh process with its own one-CPU local instance, every task run there."""
    import subprocess
    import sys

    serial = _run(tmp_path, capsys, "serial", "--executor", "serial")
    cfg = tmp_path / "tiny.yaml"
    res = subprocess.run([sys.executable, "-m", "certify.cli", "--quiet", "run", "--poison", "random",
                          "--dataset", "digits", "--config", str(cfg), "--samples", "40", "--skip",
                          "scores,recovery", "--seed", "2", "--out", str(tmp_path / "one"), "--cache-dir",
                          str(tmp_path / "one-cache"), "--executor", "ray", "--workers", "1"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert one["environment"]["workers"] == 1 and one["execution"]["cached"] == 0
    assert len({t["node"] for t in one["execution"]["tasks"]} - {"driver"}) == 1
    assert _numbers(one)["poisons"] == _numbers(serial)["poisons"]
