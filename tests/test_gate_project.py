"""The project guards its own protection strength the way users will: a small run checked against
the committed baseline (reports/baseline/digits-gate/report.json) with `certify check`."""
from pathlib import Path

import pytest

from certify.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_small_run_passes_the_committed_baseline(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--quiet", "run", "--config", str(ROOT / "tests/data/gate.yaml"), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    baseline = ROOT / "reports/baseline/digits-gate/report.json"
    code = main(["check", str(baseline), str(out / "report.json")])
    table = capsys.readouterr().out
    assert code == 0, table
    assert "ops" in table and "random" in table
