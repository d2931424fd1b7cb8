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
from certify.planning.budgets import parse_budget

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
    _audit.err = err  # the whole of stderr, for the lines that are no warning
    return json.loads((out / "report.json").read_text()), [l for l in err.splitlines() if "warning:" in l]


def test_over_budget_and_duplicated_test_images_are_warned(tmp_path, capsys, files):
    report, lines = _audit(tmp_path, capsys, files, files["release"], "--budget", "linf:2/255")
    assert len(lines) == 2 and all(line.startswith("certify: warning: ") for line in lines)
    # in the units of the report's Budget line (k/255), not as fractions of 1
    assert "linf perturbation 3/255 exceeds the declared budget 2/255 (200 of 200 images over it)" in lines[0]
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


def _export(path, x, y, manifest=None):
    from certify.export import export_released

    export_released(x, y, [str(c) for c in range(10)], path, "png", manifest or {})
    return f"folder:{path}"


def _shifted(x):
    shift = ((torch.arange(x[0].numel()).reshape(x[0].shape) % 2) * 2 - 1).float() * 3 / 255  # ±3/255
    return (x + shift).clamp(0, 1)


def test_an_exported_folder_release_pairs_by_the_index_in_its_file_names(tmp_path, capsys, files, digits):
    """`certify poison --format png` groups images by class; the file names hold their training index."""
    x, y = digits.x_train[:200], digits.y_train[:200]
    release = _export(tmp_path / "release", _shifted(x), y)
    report, lines = _audit(tmp_path, capsys, files, release)
    budget = report["poisons"]["release"]["budget"]
    assert budget["measured"] == pytest.approx(3 / 255, abs=1e-6)  # paired wrongly, it would be far larger
    assert budget["changed_fraction"] == 1.0 and not any("equal their clean twin" in line for line in lines)


def test_folder_releases_pair_by_path_with_a_folder_clean_set(tmp_path, digits):
    from certify.data import load_split
    from certify.data.release import load_release

    x, y = digits.x_train[:60], digits.y_train[:60]
    clean = _export(tmp_path / "clean", x, y)
    release = tmp_path / "release"
    _export(release, _shifted(x), y)
    cls = sorted(p for p in release.iterdir() if p.is_dir())[0]
    first, second = sorted(cls.iterdir())[:2]
    first.rename(cls / "renamed.png")  # the clean set has no file of that path
    x_clean, y_clean, _ = load_split(clean)
    with pytest.raises(UserError, match=rf"pair by path only in part \(1 release files .* e\.g\. {cls.name}/"
                                        rf"renamed\.png; 1 clean files .* e\.g\. {cls.name}/{first.name}\)"):
        load_release(f"folder:{release}", x_clean, y_clean, clean_spec=clean)
    (cls / "renamed.png").rename(first)
    from PIL import Image

    with Image.open(second) as im:  # the same path in another format (the extension aside) still pairs
        im.save(cls / f"{second.stem}.bmp")
    second.unlink()
    released, labels = load_release(f"folder:{release}", x_clean, y_clean, clean_spec=clean)
    assert torch.equal(labels, y_clean) and torch.equal(released, torch.round(_shifted(x_clean) * 255) / 255)


def test_a_folder_release_that_cannot_pair_says_how_to(tmp_path, capsys, files, digits):
    """Pairing by order fails when the clean set is in another order: the error gives the export command."""
    x, y = digits.x_train[:200], digits.y_train[:200]
    release = _export(tmp_path / "release", _shifted(x), y, {"dataset": "digits", "seed": 3})
    for p in (tmp_path / "release").rglob("*.png"):
        p.rename(p.with_name(f"image-{p.name}"))  # names that are no index
    code = main(["audit", "--release", release, "--clean", files["clean"], "--test", files["test"],
                 "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "release and clean labels differ" in err and "paired by order" in err
    assert "(certify poison --poison none --dataset digits --seed 3 --format png --out CLEAN)" in err
    assert "delta:PATH" in err and not (tmp_path / "out").exists()


def test_a_release_half_unperturbed_is_warned_and_l0_budgets_are_read(tmp_path, capsys, files, digits):
    """An OPS-like release: one pixel changed in every other image, the rest left clean."""
    x, y = digits.x_train[:200], digits.y_train[:200]
    released = x.clone()
    released[::2, :, 3, 4] = (x[::2, :, 3, 4] < 0.5).float()  # a changed pixel in images 0, 2, 4, ...
    report, lines = _audit(tmp_path, capsys, files, _npz(tmp_path / "ops.npz", released, y), "--budget", "l0:1")
    assert lines[0] == ("certify: warning: 100 of 200 released images (50.0%) equal their clean twin (no pixel "
                        "differs by half a gray level): they carry no protection")
    assert not any("exceeds" in line for line in lines)  # one pixel each: within l0:1
    assert "; l0 max 1 pixels; 50.0% of the images changed" in _audit.err
    budget = report["poisons"]["release"]["budget"]
    assert budget["norm"] == "l0" and budget["epsilon"] == 1 and budget["measured"] == 1
    assert budget["changed_fraction"] == 0.5
    assert budget["per_image_percentiles"] == {"0": 0.0, "25": 0.0, "50": 0.0, "75": 1.0, "100": 1.0}
    md = (tmp_path / "out" / "report.md").read_text()
    assert ("l0, ε = 1 pixel; measured largest per-image norm of released − clean: 1 pixel (on the images as given); "
            "per image at 0/25/50/75/100 %: 0 pixels, 0 pixels, 0 pixels, 1 pixel, 1 pixel; 50.0% of the images "
            "changed") in md


def test_l0_over_budget_is_in_pixels():
    from certify.auditing import measure_release, parse_declared

    l0 = torch.tensor([1.0, 3.0, 0.0, 1.0])
    _, warnings = measure_release({"linf": l0, "l2": l0, "l0": l0}, parse_declared("l0:1"))
    assert warnings[1] == "the measured l0 perturbation 3 pixels exceeds the declared budget 1 pixel (1 of 4 images over it)"
    for spec in ("l0:0", "l0:1.5", "l0:", "l0:-1", "l0:1/2"):
        with pytest.raises(UserError, match="whole number of pixels"):
            parse_declared(spec)
    with pytest.raises(UserError, match="l0:1"):
        parse_declared("l1:3")


def test_without_a_budget_the_budget_line_says_none_was_declared(tmp_path, capsys, files):
    report, _ = _audit(tmp_path, capsys, files, files["release"])
    assert report["poisons"]["release"]["budget"]["declared"] is False
    section = (tmp_path / "out" / "report.md").read_text().split("## Poison: release")[1]
    line = next(l for l in section.splitlines() if "**Budget**" in l)
    assert "none declared (linf measured); measured largest per-image norm of released − clean: 0.01176 (= 3/255)" in line
    assert "ε" not in line and "255/255" not in line


def _png_folder(root, x, y):
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, y)):
        d = root / str(int(label))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img[0].numpy() * 255).astype(np.uint8), "L").save(d / f"{i:04d}.png")
    return f"folder:{root}"


@pytest.mark.parametrize("kind", ["npz", "folder", "registered"])
def test_every_sentence_naming_the_test_set_names_the_test_source(tmp_path, capsys, files, digits, kind):
    """The audit's guarantee and header name the --test source, whatever its kind, never the clean set."""
    test = {"npz": files["test"], "registered": "digits:test",
            "folder": _png_folder(tmp_path / "test-folder", digits.x_test[:60], digits.y_test[:60])}[kind]
    out = tmp_path / "out"
    assert main(["audit", "--release", files["release"], "--clean", files["clean"], "--test", test, "--config",
                 files["config"], "--executor", "serial", "--skip", "scores,recovery", "--defense", "none",
                 "--samples", "20", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["test_source"] == test
    md = (out / "report.md").read_text()
    shown = test.replace("_", "\\_")  # as Markdown escapes the path
    guarantee = md[md.index("What is guaranteed."):].split("\n\n")[0]
    assert f"images of {shown})" in guarantee and files["clean"].replace("_", "\\_") not in guarantee
    assert f"(test set: {shown})" in md
