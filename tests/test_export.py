"""Exporting a released dataset: PNG class folders and npz round-trip exactly through load_split."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from certify.data import load_split
from certify.errors import UserError
from certify.export import class_folder_names, export_released

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
           "apple"]  # 11 classes: two-digit labels, names not in sorted order


def grid_images(n: int, c: int, h: int, w: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g).to(torch.float32) / 255
    y = torch.randperm(n, generator=g) % k  # interleaved labels, every class present
    return x, y


def manifest(n: int) -> dict:
    return {"poison": "lsp", "parameters": {"epsilon": 1.3}, "budget": {"norm": "l2", "epsilon": 1.3,
            "measured": 1.29}, "seed": 0, "dataset": "test", "counts": {"images": n}}


def one_line(fn, *match):
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for m in match:
        assert m in msg
    return msg


@pytest.mark.parametrize("channels", [3, 1])
def test_png_round_trip(tmp_path, channels):
    x, y = grid_images(66, channels, 9, 7, len(CLASSES))
    out = tmp_path / "png"
    export_released(x, y, CLASSES, out, "png", manifest(len(x)))
    x2, y2, classes2 = load_split(f"folder:{out}")
    # folder order: by label (sorted folder names), each class in its original order
    order = torch.sort(y, stable=True).indices
    assert x2.shape == x.shape and x2.dtype == torch.float32
    assert torch.equal(x2, x[order]) and torch.equal(y2, y[order])
    assert classes2 == class_folder_names(CLASSES)
    assert [c.split("_", 1)[1] for c in classes2] == CLASSES
    assert json.loads((out / "manifest.json").read_text())["poison"] == "lsp"
    # a set already sorted by label comes back identical
    x3, y3 = x[order], y[order]
    export_released(x3, y3, CLASSES, out, "png", manifest(len(x)))  # replaces the previous export
    x4, y4, _ = load_split(f"folder:{out}")
    assert torch.equal(x4, x3) and torch.equal(y4, y3)
    from PIL import Image

    first = next(p for p in sorted((out / classes2[0]).iterdir()))
    with Image.open(first) as im:
        assert im.mode == ("RGB" if channels == 3 else "L")


@pytest.mark.parametrize("channels", [3, 1])
def test_npz_round_trip(tmp_path, channels):
    x, y = grid_images(50, channels, 8, 8, 4, seed=1)
    out = tmp_path / "npz"
    export_released(x, y, CLASSES[:4], out, "npz", manifest(len(x)))
    x2, y2, classes2 = load_split(f"npz:{out}/data.npz")
    assert torch.equal(x2, x) and torch.equal(y2, y) and classes2 == CLASSES[:4]
    with np.load(out / "data.npz") as z:
        assert z["x"].dtype == np.uint8 and z["y"].dtype == np.int64
        assert z["x"].shape == ((50, 8, 8, 3) if channels == 3 else (50, 8, 8))
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"] == {"images": 50} and m["format"] == "npz" and m["budget"]["norm"] == "l2"


def test_off_grid_values_are_rounded(tmp_path):
    x, y = grid_images(20, 3, 4, 4, 2)
    noisy = (x + 3e-8).clamp(0, 1)  # float32 sums can sit one ulp off the grid
    export_released(noisy, y, ["a", "b"], tmp_path / "o", "npz", {})
    x2, _, _ = load_split(f"npz:{tmp_path / 'o'}/data.npz")
    assert torch.equal(x2, x)


def test_refuses_non_empty_folder_that_is_not_an_export(tmp_path):
    x, y = grid_images(10, 3, 4, 4, 2)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line(lambda: export_released(x, y, ["a", "b"], out, "png", {}), "not empty")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    f = tmp_path / "file"
    f.write_text("x")
    one_line(lambda: export_released(x, y, ["a", "b"], f, "npz", {}), "not a folder")
    # an empty folder and a previous export are fine; a png export replaced by npz leaves no class folders
    empty = tmp_path / "empty"
    empty.mkdir()
    export_released(x, y, ["a", "b"], empty, "png", {})
    export_released(x, y, ["a", "b"], empty, "npz", {})
    assert sorted(p.name for p in empty.iterdir()) == ["data.npz", "manifest.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folders left behind"


def test_bad_format_and_inputs(tmp_path):
    x, y = grid_images(10, 3, 4, 4, 2)
    one_line(lambda: export_released(x, y, ["a", "b"], tmp_path / "o", "jpg", {}), "format", "png", "npz")
    one_line(lambda: export_released(x, y[:5], ["a", "b"], tmp_path / "o", "png", {}), "labels")
    one_line(lambda: export_released(x, y, ["a", "b", "c"], tmp_path / "o", "png", {}), "class 2")
    one_line(lambda: export_released(x * 2, y, ["a", "b"], tmp_path / "o", "png", {}), "[0, 1]")
    one_line(lambda: export_released(x, y, ["a", "b"], tmp_path / "o", "npz", {"bad": object()}), "manifest")
    assert not (tmp_path / "o").exists()


def test_failure_leaves_no_half_written_export(tmp_path, monkeypatch):
    import certify.export as ex

    x, y = grid_images(10, 3, 4, 4, 2)
    out = tmp_path / "o"
    export_released(x, y, ["a", "b"], out, "npz", {"run": 1})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "_write_png", boom)
    one_line(lambda: export_released(x, y, ["a", "b"], out, "png", {"run": 2}), "No space left")
    assert json.loads((out / "manifest.json").read_text())["run"] == 1, "the previous export is intact"
    assert sorted(p.name for p in out.iterdir()) == ["data.npz", "manifest.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_class_folder_names_sort_in_label_order():
    names = class_folder_names([f"c{i}" for i in range(12)][::-1] + ["a/b", ".hidden", ""])
    assert sorted(names) == names
    assert names[12] == "12_a_b" and not any("/" in n for n in names)
    assert not any(n.startswith(".") for n in names)
