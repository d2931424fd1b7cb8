"""The literature comparison end to end on digits: the scores' tasks (MI with the covariance score,
SAL of the models trained under a defense) feed report.json's `comparison` and report.md's table."""
import json

import pytest

from certify.cli import main


@pytest.mark.slow
def test_run_with_three_poisons_and_a_defense_has_the_comparison(tmp_path, capsys, monkeypatch):
    from certify.report import figures

    monkeypatch.setattr(figures, "render", lambda report, spec: b"")  # the figures are test_report's; slow here
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("train: {epochs: 1}\nsal: {subset: 100, steps: 1}\nmi: {images: 100, projections: 8}\n")
    out = tmp_path / "out"
    code = main(["run", "--dataset", "digits", "--poison", "random,random-classwise,lsp", "--defense", "jpeg",
                 "--skip", "certify,recovery", "--executor", "serial", "--config", str(cfg),
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    none = report["poisons"]["none"]
    assert none["covariance"]["score"] == 1.0 and none["covariance"]["images"] == 100
    assert set(none["sal_ud"]["defended"]) == {"jpeg"}
    assert "checkpoints" not in none["empirical"]["defenses"]["jpeg"]
    comp = report["comparison"]
    assert [r["poison"] for r in comp["rows"]] == ["none", "random", "random-classwise", "lsp"]
    for row in comp["rows"]:
        sec = report["poisons"][row["poison"]]
        assert row["mi_gap"] == sec["mutual_information"]["gap"] and row["covariance"] == sec["covariance"]["score"]
        assert row["defenses"]["jpeg"]["ud"] == sec["sal_ud"]["defended"]["jpeg"]["ud"]
        assert row["certified_status"] == "absent"
    mi = comp["correlations"]["mi_gap"]
    assert mi["n"] == 3 and mi["poisons"] == ["random", "random-classwise", "lsp"]
    assert (mi["rho"] is None) == (mi["reason"] is not None)
    md = (out / "report.md").read_text()
    assert "## Comparison with the literature" in md and "| UD jpeg |" in md
