"""`--image-size S`: images of any size resized to S×S for `run`, `poison` and `audit`, said in the
report; in an audit the perturbation is still measured on the images as given."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from certify.cli import main

TINY = "train: {epochs: 1}\n"
SIZES = [(8, 8), (10, 14), (13, 9), (16, 16)]


def _folders(root: Path, release_scale: int = 1) -> dict[str, str]:
    """clean, release (clean ± 3/255, clipped; `release_scale` times larger) and test image folders of mixed sizes."""
    rng = np.random.default_rng(0)
    for name, per_class in (("clean", 4), ("test", 2)):
        for cls in ("a", "b"):
            (root / name / cls).mkdir(parents=True)
            if name == "clean":
                (root / "release" / cls).mkdir(parents=True)
            for i in range(per_class):
                h, w = SIZES[i]
                a = rng.integers(0, 256, (h, w), dtype=np.uint8)
                Image.fromarray(a).save(root / name / cls / f"{i}.png")
                if name == "clean":
                    shift = np.where((np.arange(h * w).reshape(h, w) % 2) == 0, 3, -3)
                    r = Image.fromarray(np.clip(a.astype(int) + shift, 0, 255).astype(np.uint8))
                    r.resize((w * release_scale, h * release_scale)).save(root / "release" / cls / f"{i}.png")
    (root / "tiny.yaml").write_text(TINY)
    return {k: f"folder:{root / k}" for k in ("clean", "release", "test")}


def _audit(tmp_path, capsys, f, *extra):
    code = main(["audit", "--release", f["release"], "--clean", f["clean"], "--test", f["test"], "--config",
                 str(tmp_path / "tiny.yaml"), "--executor", "serial", "--skip", "certify,scores,recovery",
                 "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *extra])
    return code, capsys.readouterr().err


def test_audit_of_mixed_sizes_resizes_and_measures_as_given(tmp_path, capsys):
    f = _folders(tmp_path)
    code, err = _audit(tmp_path, capsys, f)
    assert code == 2 and err.count("\n") == 1 and "--image-size S" in err and not (tmp_path / "out").exists()
    code, err = _audit(tmp_path, capsys, f, "--image-size", "8")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("certify: warning: ")]
    assert len(warnings) == 1 and "resizing changes the perturbation" in warnings[0]
    assert "measured on the images as given" in warnings[0]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dataset"]["resized_to"] == 8 and report["dataset"]["shape"] == [1, 8, 8]
    budget = report["poisons"]["release"]["budget"]
    assert budget["measured"] == pytest.approx(3 / 255, abs=1e-6) and budget["measured_on"] == "images as given"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "every image resized to 8×8" in md and "(on the images as given)" in md


def test_audit_of_a_release_at_another_size_measures_after_resizing(tmp_path, capsys):
    f = _folders(tmp_path, release_scale=2)
    code, err = _audit(tmp_path, capsys, f, "--image-size", "8")
    assert code == 0, err
    assert "differ in size, so the budget is measured after resizing" in err
    budget = json.loads((tmp_path / "out" / "report.json").read_text())["poisons"]["release"]["budget"]
    assert budget["measured_on"] == "images resized to 8x8" and budget["measured"] > 0


def test_run_and_poison_with_image_size(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY)
    common = ["--dataset", "digits", "--image-size", "10", "--cache-dir", str(tmp_path / "cache")]
    code = main(["run", "--poison", "random", *common, "--config", str(tmp_path / "tiny.yaml"), "--executor", "serial",
                 "--skip", "certify,scores,recovery", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dataset"]["resized_to"] == 10 and report["dataset"]["shape"] == [1, 10, 10]
    assert report["config"]["image_size"] == 10
    assert main(["poison", "--poison", "random", *common, "--format", "npz", "--out", str(tmp_path / "export")]) == 0
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["resized_to"] == 10
    assert np.load(tmp_path / "export" / "data.npz")["x"].shape[1:] == (10, 10)
    capsys.readouterr()
    assert main(["run", "--poison", "random", *common[:2], "--image-size", "0", "--out", str(tmp_path / "o2")]) == 2
    assert "image_size must be > 0" in capsys.readouterr().err
