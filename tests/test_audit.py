"""`certify audit` looks at a release as a careful data owner would: a perturbation over the
declared budget, a release equal to the clean data, and test images that also occur in the
training data are each warned about on stderr and recorded in the report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from certify.cli import main
from certify.errors import UserError
from certify.plan.budgets import parse_budget

TINY = "train: {epochs: 1}\n"


def _npz(path, x, y):
    np.savez(path, x=np.round(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8), y=y.numpy())
    return f"npz:{path}"


@pytest.fixture
def files(tmp_path, digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    shift = ((np.arange(x[0].numel()).reshape(x[0].shape) % 2) * 2 - 1) * 3 / 255  # ±3/255
    released = (x + torch.tensor(shift, dtype=torch.float32)).clamp(0, 1)
    x_test, y_test = digits.x_test[:60].clone(), digits.y_test[:60].clone()
    x_test[:5], y_test[:5] = x[:5], y[:5]  # five training images in the test set
    (tmp_path / "tiny.yaml").write_text(TINY)
    return {"clean": _npz(tmp_path / "clean.npz", x, y), "release": _npz(tmp_path / "release.npz", released, y),
            "test": _npz(tmp_path / "test.npz", x_test, y_test), "config": str(tmp_path / "tiny.yaml")}


def _audit(tmp_path, capsys, files, release, *extra):
    out = tmp_path / "out"
    code = main(["audit", "--release", release, "--clean", files["clean"], "--test", files["test"], "--config",
                 files["config"], "--executor", "serial", "--skip", "certify,scores,recovery", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), *extra])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads((out / "report.json").read_text()), [l for l in err.splitlines() if "warning:" in l]


def test_over_budget_and_duplicated_test_images_are_warned(tmp_path, capsys, files):
    report, lines = _audit(tmp_path, capsys, files, files["release"], "--budget", "linf:2/255")
    assert len(lines) == 2 and all(line.startswith("certify: warning: ") for line in lines)
    assert "exceeds the declared budget" in lines[0] and "200 of 200 images" in lines[0]
    assert lines[1].startswith("certify: warning: 5 of 60 test images also occur in the training data")
    assert report["warnings"] == [line.removeprefix("certify: warning: ") for line in lines]
    budget = report["poisons"]["release"]["budget"]
    assert budget["declared"] is True and budget["epsilon"] == pytest.approx(2 / 255)
    assert budget["measured"] == pytest.approx(3 / 255, abs=1e-6)
    assert "## Warnings" in (tmp_path / "out" / "report.md").read_text()


def test_within_budget_is_not_warned_and_a_clean_copy_is(tmp_path, capsys, files):
    report, lines = _audit(tmp_path, capsys, files, files["release"], "--budget", "linf:8/255")
    assert not any("budget" in line for line in lines)
    report, lines = _audit(tmp_path / "again", capsys, files, files["clean"])
    assert any("the release equals the clean data" in line for line in lines)


@pytest.mark.parametrize("spec", ["linf", "linf:", "l1:8/255", "linf:-1", "linf:1/0", "linf:abc", "l2:inf"])
def test_bad_budget_is_one_line(spec):
    with pytest.raises(UserError, match="--budget"):
        parse_budget(spec)
    assert parse_budget("l2:0.5") == {"norm": "l2", "epsilon": 0.5}


@pytest.mark.slow
def test_audit_of_a_perturbation_file_from_the_cli(tmp_path, capsys, digits):
    """A release made elsewhere, given as its perturbation (`delta:`), certified end to end on digits."""
    from certify.data import load_split

    x, _, _ = load_split("digits:train")
    pattern = ((torch.arange(64).reshape(1, 1, 8, 8) % 2) * 2 - 1).float() * 3 / 255  # ±3/255
    torch.save({"delta": pattern.expand_as(x).permute(0, 2, 3, 1).contiguous()}, tmp_path / "delta.pt")  # NHWC
    (tmp_path / "tiny.yaml").write_text(TINY)
    out = tmp_path / "out"
    code = main(["audit", "--release", f"delta:{tmp_path / 'delta.pt'}", "--clean", "digits:train", "--test",
                 "digits:test", "--config", str(tmp_path / "tiny.yaml"), "--executor", "serial", "--samples", "50",
                 "--skip", "scores,recovery", "--budget", "linf:4/255", "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning" not in err
    report = json.loads((out / "report.json").read_text())
    budget = report["poisons"]["release"]["budget"]
    assert budget["measured"] == pytest.approx(3 / 255, abs=1e-6) and budget["measured_on"] == "images as given"
    assert budget["measured_linf_max"] == budget["measured"]
    cert = report["poisons"]["release"]["certificate"]
    assert cert["samples"] == 50 and len(cert["draws"]) == 50
    assert "sal_ud" not in report["poisons"]["release"] and "recovery" not in report["poisons"]["release"]
    assert report["dataset"]["n_train"] == len(x) and "resized_to" not in report["dataset"]
    # the guarantee names the test set the audit was given, not the clean set it was paired with
    assert report["dataset"]["test_source"] == "digits:test"
    md = (out / "report.md").read_text()
    assert f"({report['dataset']['n_test']} images of digits:test)" in md and "(test set: digits:test)" in md
    assert "images of digits:train)" not in md


def test_a_perturbation_in_pixel_units_is_one_line_and_writes_nothing(tmp_path, capsys, files):
    np.save(tmp_path / "delta.npy", np.full((200, 8, 8), 3.0, np.float32))  # ±3 levels saved without / 255
    out = tmp_path / "out"
    code = main(["audit", "--release", f"delta:{tmp_path / 'delta.npy'}", "--clean", files["clean"], "--test",
                 files["test"], "--executor", "serial", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("certify: error: ")
    assert "divide it by 255" in err and not out.exists()
