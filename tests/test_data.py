"""The dataset layer: shipped sets, folder and npz sources, validation, the seeded split, --test."""
from __future__ import annotations

import hashlib
import json
import tarfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import certify.data.cifar10_mini as cifar10_mini
from certify.data import DATASETS, SPEC_FORMS, Dataset, load_dataset, load_split, validate
from certify.errors import UserError
from certify.models import MODELS
from certify.seeding import stratified_draw
from sample_files import header_only_png, npz_with_member, write_idx

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def on_grid(x: torch.Tensor) -> bool:
    return bool(torch.equal(torch.round(x * 255) / 255, x))


def one_line_error(fn, *match):
    """Run fn, expect a UserError with a one-line message containing every string in `match`."""
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg.strip()
    for m in match:
        assert m in msg, f"{m!r} not in {msg!r}"
    return msg


@pytest.fixture(scope="module")
def mini() -> Dataset:
    return load_dataset("cifar10-mini")


# ---------------------------------------------------------------- registry

def test_registry_lists_every_named_source_with_a_summary():
    names = DATASETS.names()
    for n in ["cifar10-mini", "digits", "mnist", "cifar10", "cifar100", "svhn"]:
        assert n in names
    for e in DATASETS.entries():
        assert e.summary and "\n" not in e.summary
    assert set(SPEC_FORMS) == {"folder:PATH", "npz:PATH", "idx:DIR", "pt:PATH", "delta:PATH"}
    assert all(v and "\n" not in v for v in SPEC_FORMS.values())


def test_default_dataset_is_cifar10_mini():
    """What the README and `--help` promise: a run without --dataset, and the loader without a name,
    use the shipped cifar10-mini."""
    from certify.config import load_config

    assert load_config().dataset == "cifar10-mini"
    d = load_dataset()
    assert d.name == "cifar10-mini" and d.classes == CIFAR_CLASSES


@pytest.mark.parametrize("spec", ["nope", "", "cifar10-mini:val", "folder:", "npz:", "idx:"])
def test_bad_specs(spec):
    one_line_error(lambda: load_dataset(spec))


def test_dataset_spec_with_split_is_rejected():
    one_line_error(lambda: load_dataset("cifar10-mini:train"), "--test")


def test_split_source_named_bare_as_one_set_is_rejected():
    one_line_error(lambda: load_split("cifar10-mini"), "cifar10-mini:train")


def test_torchvision_source_absent_without_download(tmp_path):
    one_line_error(lambda: load_dataset("cifar10", data_root=tmp_path), "--download", "--data-root")
    one_line_error(lambda: load_dataset("mnist", data_root=tmp_path / "missing"), "--download", "--data-root")


# ---------------------------------------------------------------- digits

def test_digits():
    d = load_dataset("digits")
    assert d.shape == (1, 8, 8) and d.num_classes == 10
    assert d.classes == [str(i) for i in range(10)]
    assert len(d.y_train) + len(d.y_test) == 1797
    assert len(d.y_test) == round(0.2 * 1797)
    for x in (d.x_train, d.x_test):
        assert x.dtype == torch.float32 and on_grid(x)
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert d.y_train.dtype == torch.int64
    # values 0..16 map to round(v*255/16)/255: exactly 17 levels
    from sklearn.datasets import load_digits

    levels = torch.unique(torch.cat([d.x_train, d.x_test]))
    expected = torch.tensor(sorted({round(v * 255 / 16) / 255 for v in range(17)}), dtype=torch.float32)
    assert torch.equal(levels, expected)
    whole, y, _ = load_split("digits")
    raw = load_digits()
    assert torch.equal(whole[:, 0], torch.round(torch.tensor(raw.images) * 255 / 16).float() / 255)
    assert torch.equal(y, torch.tensor(raw.target))


# ---------------------------------------------------------------- cifar10-mini

def test_cifar10_mini_shapes_counts_order_grid(mini):
    assert mini.x_train.shape == (5000, 3, 32, 32) and mini.x_test.shape == (1000, 3, 32, 32)
    assert mini.shape == (3, 32, 32) and mini.num_classes == 10
    assert mini.classes == CIFAR_CLASSES
    assert torch.equal(torch.bincount(mini.y_train), torch.full((10,), 500))
    assert torch.equal(torch.bincount(mini.y_test), torch.full((10,), 100))
    assert torch.equal(mini.y_train, torch.arange(10).repeat_interleave(500))
    for x in (mini.x_train, mini.x_test):
        assert x.dtype == torch.float32 and on_grid(x)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert float(x.std()) > 0.1  # real images, not a constant
    assert mini.y_train.dtype == torch.int64
    assert mini.info() == {"name": "cifar10-mini", "n_train": 5000, "n_test": 1000, "shape": [3, 32, 32],
                           "classes": 10}


def test_cifar10_mini_splits_one_at_a_time(mini):
    x, y, classes = load_split("cifar10-mini:test")
    assert torch.equal(x, mini.x_test) and torch.equal(y, mini.y_test) and classes == CIFAR_CLASSES
    x, y, _ = load_split("cifar10-mini:train")
    assert torch.equal(x, mini.x_train)


def test_cifar10_mini_archive_matches_manifest():
    manifest = json.loads(Path(cifar10_mini.MANIFEST).read_text())
    blob = Path(cifar10_mini.ARCHIVE).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == manifest["sha256"]
    assert len(blob) == manifest["bytes"] <= 3 * 1024 * 1024
    with tarfile.open(cifar10_mini.ARCHIVE) as tar:
        members = tar.getmembers()
    assert len(members) == 6000
    assert members[0].name == "train/airplane/0000.jpg" and members[-1].name == "test/truck/0099.jpg"
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.isfile() for m in members)


def test_cifar10_mini_decodes_like_pillow(mini):
    with tarfile.open(cifar10_mini.ARCHIVE) as tar:
        for name, x, offset in [("train/cat/0123.jpg", mini.x_train, 3 * 500 + 123),
                                ("test/truck/0099.jpg", mini.x_test, 9 * 100 + 99)]:
            a = np.array(Image.open(tar.extractfile(name)).convert("RGB"))
            assert torch.equal(x[offset], torch.from_numpy(a).permute(2, 0, 1).float() / 255)


def test_cifar10_mini_corrupted_archive(tmp_path, monkeypatch):
    bad = tmp_path / "cifar10-mini.tar.gz"
    blob = bytearray(Path(cifar10_mini.ARCHIVE).read_bytes())
    for i in (100, len(blob) // 2, len(blob) - 20):
        blob[i] ^= 0xFF
    bad.write_bytes(bytes(blob))
    monkeypatch.setattr(cifar10_mini, "ARCHIVE", bad)
    one_line_error(lambda: load_dataset("cifar10-mini"), "checksum", str(bad))


def test_cifar10_mini_missing_archive_or_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10_mini, "ARCHIVE", tmp_path / "gone.tar.gz")
    one_line_error(lambda: load_dataset("cifar10-mini"), "missing")
    monkeypatch.setattr(cifar10_mini, "MANIFEST", tmp_path / "gone.json")
    one_line_error(lambda: load_dataset("cifar10-mini"), "manifest")


def test_cifar10_mini_manifest_counts_must_be_positive_integers(tmp_path, monkeypatch):
    for value in ("many", 0):  # they size the decoding loops
        m = json.loads(Path(cifar10_mini.MANIFEST).read_text())
        m["train_per_class"] = value
        (tmp_path / "m.json").write_text(json.dumps(m))
        monkeypatch.setattr(cifar10_mini, "MANIFEST", tmp_path / "m.json")
        one_line_error(lambda: load_dataset("cifar10-mini"), "unreadable cifar10-mini manifest")


@pytest.mark.skipif(not (SHARED_CIFAR / "cifar10-test.tar.gz").is_file(), reason="shared CIFAR-10 archives absent")
def test_cifar10_mini_pixels_equal_the_shared_archive(mini):
    with tarfile.open(SHARED_CIFAR / "cifar10-test.tar.gz") as tar:
        for cls, i in [("airplane", 0), ("dog", 57), ("truck", 99)]:
            a = np.array(Image.open(tar.extractfile(f"test/{cls}/{i:04d}.jpg")).convert("RGB"))
            got = mini.x_test[CIFAR_CLASSES.index(cls) * 100 + i]
            assert torch.equal(got, torch.from_numpy(a).permute(2, 0, 1).float() / 255)


# ---------------------------------------------------------------- folder:PATH

def write_folder(root: Path, arrays: dict[str, list[np.ndarray]]) -> None:
    for cls, images in arrays.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(images):
            Image.fromarray(a).save(root / cls / f"{i:03d}.png")


def random_images(rng, n, shape):
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]


def expected_tensor(arrays: dict[str, list[np.ndarray]]):
    xs, ys = [], []
    for label, cls in enumerate(sorted(arrays)):
        for a in arrays[cls]:
            a = a if a.ndim == 3 else a[..., None]
            xs.append(torch.from_numpy(a).permute(2, 0, 1).float() / 255)
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def test_folder_rgb_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"b_dog": random_images(rng, 4, (6, 5, 3)), "a_cat": random_images(rng, 3, (6, 5, 3)),
              "c_eel": random_images(rng, 2, (6, 5, 3))}
    write_folder(tmp_path, arrays)
    (tmp_path / "a_cat" / ".DS_Store").write_bytes(b"junk")  # hidden files are skipped
    x, y, classes = load_split(f"folder:{tmp_path}")
    ex, ey = expected_tensor(arrays)
    assert classes == ["a_cat", "b_dog", "c_eel"]
    assert x.shape == (9, 3, 6, 5) and x.dtype == torch.float32
    assert torch.equal(x, ex) and torch.equal(y, ey) and y.dtype == torch.int64


def test_folder_grayscale_stays_one_channel(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"0": random_images(rng, 3, (7, 7)), "1": random_images(rng, 3, (7, 7))}
    write_folder(tmp_path, arrays)
    x, y, _ = load_split(f"folder:{tmp_path}")
    ex, ey = expected_tensor(arrays)
    assert x.shape == (6, 1, 7, 7) and torch.equal(x, ex) and torch.equal(y, ey)


def test_folder_mixed_gray_and_rgb_becomes_rgb(tmp_path):
    rng = np.random.default_rng(2)
    gray, rgb = random_images(rng, 1, (4, 4))[0], random_images(rng, 1, (4, 4, 3))[0]
    write_folder(tmp_path, {"a": [gray], "b": [rgb]})
    x, _, _ = load_split(f"folder:{tmp_path}")
    assert x.shape == (2, 3, 4, 4)
    g = torch.from_numpy(gray).float() / 255
    assert all(torch.equal(x[0, c], g) for c in range(3))


def test_folder_as_dataset_gets_a_split(tmp_path):
    rng = np.random.default_rng(3)
    write_folder(tmp_path, {"a": random_images(rng, 10, (3, 3, 3)), "b": random_images(rng, 10, (3, 3, 3))})
    d = load_dataset(f"folder:{tmp_path}")
    assert len(d.y_train) == 16 and len(d.y_test) == 4
    assert torch.equal(torch.bincount(d.y_test), torch.tensor([2, 2]))


def _two_class_folder(root: Path, shape=(4, 4, 3)):
    rng = np.random.default_rng(4)
    write_folder(root, {"a": random_images(rng, 2, shape), "b": random_images(rng, 2, shape)})


def test_folder_missing_path(tmp_path):
    one_line_error(lambda: load_split(f"folder:{tmp_path / 'nope'}"), str(tmp_path / "nope"), "does not exist")


def test_folder_path_is_a_file(tmp_path):
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    one_line_error(lambda: load_split(f"folder:{f}"), str(f))


def test_folder_without_class_folders(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "loose.png")
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), "no class folders")


def test_folder_empty_class(tmp_path):
    _two_class_folder(tmp_path)
    (tmp_path / "c").mkdir()
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), str(tmp_path / "c"), "empty")


def test_folder_single_class(tmp_path):
    write_folder(tmp_path, {"only": [np.zeros((4, 4), np.uint8)]})
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), "2 classes")


def test_folder_truncated_image(tmp_path):
    _two_class_folder(tmp_path)
    img = tmp_path / "b" / "001.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(img)
    img.write_bytes(img.read_bytes()[:200])
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), str(img))


def test_folder_truncated_jpeg(tmp_path):
    _two_class_folder(tmp_path, shape=(32, 32, 3))
    img = tmp_path / "a" / "002.jpg"
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(img, quality=90)
    img.write_bytes(img.read_bytes()[:400])
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), str(img))


def test_folder_unreadable_file(tmp_path):
    _two_class_folder(tmp_path)
    bad = tmp_path / "a" / "notes.txt"
    bad.write_text("not an image")
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), str(bad), "unreadable")


def test_folder_mixed_sizes(tmp_path):
    _two_class_folder(tmp_path)
    odd = tmp_path / "b" / "009.png"
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(odd)
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), str(odd), "size")


def test_folder_nested_folder(tmp_path):
    _two_class_folder(tmp_path)
    (tmp_path / "a" / "sub").mkdir()
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), str(tmp_path / "a" / "sub"))


# ---------------------------------------------------------------- any image size: --image-size

def mixed_format_folder(root: Path) -> dict[str, np.ndarray]:
    """Two classes of images of six sizes in PNG, JPEG, WebP (lossless) and BMP; the PNG ones returned."""
    rng = np.random.default_rng(16)
    pngs = {}
    for cls, sizes in (("a", [(12, 20), (9, 9), (30, 17)]), ("b", [(8, 8), (16, 40), (11, 13)])):
        (root / cls).mkdir(parents=True)
        for i, ((h, w), (fmt, ext)) in enumerate(zip(sizes, [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"),
                                                              ("BMP", "bmp")] * 2)):
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / cls / f"{i}.{ext}", format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
            if fmt == "PNG":
                pngs[f"{cls}/{i}"] = a
    return pngs


def test_folder_of_mixed_sizes_and_formats_needs_image_size(tmp_path):
    pngs = mixed_format_folder(tmp_path)
    msg = one_line_error(lambda: load_split(f"folder:{tmp_path}"), "differs from", "--image-size S")
    assert msg.startswith(str(tmp_path / "a"))
    x, y, classes = load_split(f"folder:{tmp_path}", image_size=8)
    assert x.shape == (6, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1] and on_grid(x)
    # a PNG image is exactly torchvision's antialiased resize of its pixels, then a centre crop
    from torchvision.transforms.v2 import functional as F

    ref = F.center_crop(F.resize(torch.from_numpy(pngs["a/0"]).permute(2, 0, 1), [8], antialias=True), [8, 8])
    assert torch.equal(x[0], ref.float() / 255)
    assert torch.equal(x[3], torch.from_numpy(pngs["b/0"]).permute(2, 0, 1).float() / 255)  # already 8x8: as it was
    # as a dataset: the report records the size
    d = load_dataset(f"folder:{tmp_path}", test=f"folder:{tmp_path}", image_size=8)
    assert d.info()["resized_to"] == 8 and d.shape == (3, 8, 8)
    assert "resized_to" not in load_dataset("digits").info()


def test_folder_of_mixed_sizes_as_given_is_a_list(tmp_path):
    mixed_format_folder(tmp_path)
    x, _, _ = load_split(f"folder:{tmp_path}", mixed_ok=True)
    assert isinstance(x, list) and [tuple(im.shape) for im in x][:2] == [(3, 12, 20), (3, 9, 9)]


def test_resize_keeps_the_centre_of_the_shorter_side():
    from certify.data.resize import fit, resize_images

    img = torch.zeros(2, 1, 12, 36)
    img[0, ..., 12:24] = 1.0  # a white middle third: what the centre crop of a 12x36 image keeps
    img[1, ..., :12] = 1.0  # a white left third: cropped away
    out = resize_images(img, 6, "w")
    assert out.shape == (2, 1, 6, 6) and on_grid(out)
    assert float(out[0, ..., 1:5].min()) == 1.0 and float(out[0].min()) > 0.5  # antialiasing softens the edges only
    assert float(out[1].max()) < 0.2
    one_line_error(lambda: fit([torch.zeros(1, 4, 4), torch.zeros(1, 5, 4)], None, "w"), "several sizes", "--image-size")


def test_folder_refuses_other_formats(tmp_path):
    _two_class_folder(tmp_path)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a" / "icon.ico", format="ICO")
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), str(tmp_path / "a" / "icon.ico"), "PNG, JPEG, WEBP, BMP")


# ---------------------------------------------------------------- npz:PATH

def save_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_uint8_round_trip_channels_last_and_gray(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (12, 5, 6, 3), dtype=np.uint8)
    y = np.arange(12) % 3
    x_t, y_t, classes = load_split(save_npz(tmp_path / "a.npz", x=x, y=y))
    assert x_t.shape == (12, 3, 5, 6) and x_t.dtype == torch.float32
    assert torch.equal(x_t, torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(y_t, torch.from_numpy(y).long()) and y_t.dtype == torch.int64
    assert classes == ["0", "1", "2"]
    g = x[..., 0]
    x_g, _, _ = load_split(save_npz(tmp_path / "g.npz", x=g, y=y.astype(np.int32)))
    assert x_g.shape == (12, 1, 5, 6) and torch.equal(x_g[:, 0], torch.from_numpy(g).float() / 255)


def test_npz_float32_round_trip_and_class_names(tmp_path):
    rng = np.random.default_rng(8)
    x = (rng.integers(0, 256, (6, 4, 4, 1)) / 255).astype(np.float32)
    y = np.array([0, 1, 0, 1, 0, 1])
    x_t, y_t, classes = load_split(save_npz(tmp_path / "f.npz", x=x, y=y, classes=np.array(["neg", "pos"])))
    assert torch.equal(x_t, torch.from_numpy(x).permute(0, 3, 1, 2)) and on_grid(x_t)
    assert classes == ["neg", "pos"] and torch.equal(y_t, torch.from_numpy(y))


def test_npz_float32_off_grid_is_rounded_onto_the_grid(tmp_path):
    x = np.full((2, 2, 2), 0.5, np.float32)
    x_t, _, _ = load_split(save_npz(tmp_path / "f.npz", x=x, y=np.array([0, 1])))
    assert on_grid(x_t) and torch.allclose(x_t, torch.full_like(x_t, 128 / 255))


NPZ_OK_X = np.zeros((4, 3, 3, 3), np.uint8)
NPZ_OK_Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize("arrays, match", [
    ({"y": NPZ_OK_Y}, "'x'"),
    ({"x": NPZ_OK_X}, "'y'"),
    ({"x": NPZ_OK_X.astype(np.float64), "y": NPZ_OK_Y}, "dtype float64"),
    ({"x": NPZ_OK_X.astype(np.int16), "y": NPZ_OK_Y}, "dtype int16"),
    ({"x": np.zeros((4, 3, 8, 8), np.uint8), "y": NPZ_OK_Y}, "shape"),  # channels first
    ({"x": np.zeros((4, 9), np.uint8), "y": NPZ_OK_Y}, "shape"),
    ({"x": np.full((4, 2, 2), np.nan, np.float32), "y": NPZ_OK_Y}, "NaN"),
    ({"x": np.full((4, 2, 2), np.inf, np.float32), "y": NPZ_OK_Y}, "Inf"),
    ({"x": np.full((4, 2, 2), 1.5, np.float32), "y": NPZ_OK_Y}, "[0, 1]"),
    ({"x": np.full((4, 2, 2), -0.1, np.float32), "y": NPZ_OK_Y}, "[0, 1]"),
    ({"x": np.full((4, 2, 2), 255.0, np.float32), "y": NPZ_OK_Y}, "[0, 1]"),
    ({"x": NPZ_OK_X, "y": np.array([0, 1, -1, 1])}, "negative"),
    ({"x": NPZ_OK_X, "y": np.array([0, 1, 2, 1]), "classes": np.array(["a", "b"])}, "out of range"),
    ({"x": NPZ_OK_X, "y": np.array([0.0, 1.0, 0.5, 1.0])}, "integers"),
    ({"x": NPZ_OK_X, "y": np.array([0.0, 1.0, 0.0, 1.0])}, "integers"),
    ({"x": NPZ_OK_X, "y": np.array([0, 1, 0])}, "4 images but y holds 3"),
    ({"x": NPZ_OK_X, "y": np.array([[0, 1, 0, 1]])}, "shape"),
    ({"x": NPZ_OK_X, "y": np.array([0, 0, 0, 0])}, "2 classes"),
    ({"x": NPZ_OK_X, "y": np.array([0, 2, 0, 2])}, "class 1 has no images"),
    ({"x": NPZ_OK_X, "y": NPZ_OK_Y, "classes": np.array([1, 2])}, "classes"),
    # sizes read from the file are checked before they size anything (issue 18)
    ({"x": NPZ_OK_X, "y": NPZ_OK_Y, "classes": np.array(list("abcde"))}, "5 classes (labels 0..4) but only 4 images"),
    ({"x": NPZ_OK_X, "y": np.array([0, 1, 0, 10**9])}, "1,000,000,001 classes"),
    ({"x": np.zeros((2, 4097, 1), np.uint8), "y": np.array([0, 1])}, "over the limit of 4096 pixels per side"),
])
def test_npz_errors(tmp_path, arrays, match):
    spec = save_npz(tmp_path / "bad.npz", **arrays)
    one_line_error(lambda: load_split(spec), match, str(tmp_path / "bad.npz"))


def test_npz_pickled_object_array_is_refused(tmp_path):
    spec = save_npz(tmp_path / "obj.npz", x=np.array([object()] * 4, dtype=object), y=NPZ_OK_Y)
    one_line_error(lambda: load_split(spec), str(tmp_path / "obj.npz"))


def test_npz_not_a_zip_and_missing_file(tmp_path):
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"definitely not a zip file")
    one_line_error(lambda: load_split(f"npz:{bad}"), str(bad))
    one_line_error(lambda: load_split(f"npz:{tmp_path / 'none.npz'}"), "does not exist")


# ---------------------------------------------------------------- validate

def test_validate_rejects_bad_sets():
    x, y = torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    validate(x, y, "ok")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    one_line_error(lambda: validate(bad, y, "w"), "NaN")
    one_line_error(lambda: validate(x + 2, y, "w"), "[0, 1]")
    one_line_error(lambda: validate(x, torch.tensor([0, 1, 0, 3]), "w", 3), "out of range")
    one_line_error(lambda: validate(x, torch.tensor([0, 2, 0, 2]), "w"), "class 1")
    one_line_error(lambda: validate(x, torch.tensor([0, 1, 0]), "w"), "labels")
    one_line_error(lambda: validate(x.double(), y, "w"), "float32")
    # K = max label + 1 is checked against the images before bincount sizes an array by it
    one_line_error(lambda: validate(x, torch.tensor([0, 1, 0, 10**9]), "w"), "1,000,000,001 classes", "4 images")


# ---------------------------------------------------------------- --test and the seeded split

def indexed_npz(path: Path, n_per_class=(30, 20, 10), shape=(2, 2)) -> tuple[str, np.ndarray]:
    """An npz whose image i has pixel (0,0) = i % 256 and (0,1) = i // 256, so rows identify themselves."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    y = np.random.default_rng(9).permutation(y)
    x = np.zeros((len(y),) + shape, np.uint8)
    x[:, 0, 0] = np.arange(len(y)) % 256
    x[:, 0, 1] = np.arange(len(y)) // 256
    return save_npz(path, x=x, y=y), y


def row_ids(x: torch.Tensor) -> list[int]:
    v = torch.round(x[:, 0] * 255).long()
    return (v[:, 0, 0] + 256 * v[:, 0, 1]).tolist()


def test_stratified_split_is_seeded_and_keeps_proportions(tmp_path):
    spec, y = indexed_npz(tmp_path / "d.npz")
    a, b, c = (load_dataset(spec, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert row_ids(a.x_test) != row_ids(c.x_test)
    tr, te = row_ids(a.x_train), row_ids(a.x_test)
    assert sorted(tr + te) == list(range(len(y))) and not set(tr) & set(te)
    assert tr == sorted(tr) and te == sorted(te)  # source order kept
    assert torch.equal(a.y_train, torch.from_numpy(y[tr])) and torch.equal(a.y_test, torch.from_numpy(y[te]))
    assert len(te) == 12
    assert torch.bincount(a.y_test).tolist() == [6, 4, 2]
    assert torch.bincount(a.y_train).tolist() == [24, 16, 8]
    # the `:train` / `:test` parts of a source without a split are the same seeded split
    x_te, _, _ = load_split("digits:test", seed=3)
    assert torch.equal(x_te, load_dataset("digits", seed=3).x_test)


def test_stratified_draw_is_seeded_and_keeps_class_shares():
    y = torch.arange(10).repeat_interleave(50)
    drawn, rest = stratified_draw(y, 100, seed=0, where="t")
    assert torch.bincount(y[drawn], minlength=10).tolist() == [10] * 10
    assert drawn.tolist() == sorted(drawn.tolist()) and rest.tolist() == sorted(rest.tolist())
    assert sorted(drawn.tolist() + rest.tolist()) == list(range(500))
    assert torch.equal(drawn, stratified_draw(y, 100, seed=0, where="t")[0])
    assert not torch.equal(drawn, stratified_draw(y, 100, seed=1, where="t")[0])
    assert torch.bincount(y[stratified_draw(y, 0.2, seed=0, where="t")[0]]).tolist() == [10] * 10
    assert len(stratified_draw(y, 500, seed=0, where="t")[0]) == 500  # a size covering all draws all
    assert len(stratified_draw(y, 1.0, seed=0, where="t")[0]) == 500
    one_line_error(lambda: stratified_draw(y, 5, seed=0, where="t"), "t: cannot draw a stratified 5 of 500")


def test_split_needs_two_images_per_class(tmp_path):
    spec = save_npz(tmp_path / "s.npz", x=np.zeros((3, 2, 2), np.uint8), y=np.array([0, 1, 1]))
    one_line_error(lambda: load_dataset(spec), "2 images per class")
    load_split(spec)  # used whole it is fine


def test_test_source_replaces_the_test_split(tmp_path):
    rng = np.random.default_rng(10)
    train = {"a": random_images(rng, 5, (4, 4, 3)), "b": random_images(rng, 5, (4, 4, 3))}
    test = {"a": random_images(rng, 2, (4, 4, 3)), "b": random_images(rng, 3, (4, 4, 3))}
    write_folder(tmp_path / "train", train)
    write_folder(tmp_path / "test", test)
    d = load_dataset(f"folder:{tmp_path / 'train'}", test=f"folder:{tmp_path / 'test'}")
    assert torch.equal(d.x_train, expected_tensor(train)[0])  # the whole source trains
    assert torch.equal(d.x_test, expected_tensor(test)[0]) and torch.equal(d.y_test, torch.tensor([0, 0, 1, 1, 1]))
    assert d.classes == ["a", "b"]


def test_test_source_from_a_registered_split(mini):
    d = load_dataset("cifar10-mini", test="cifar10-mini:test")
    assert torch.equal(d.x_test, mini.x_test) and torch.equal(d.x_train, mini.x_train)
    d = load_dataset("digits", test="digits:test", seed=5)
    ref = load_dataset("digits", seed=5)
    assert torch.equal(d.x_train, ref.x_train) and torch.equal(d.x_test, ref.x_test)


def test_test_source_shape_or_class_mismatch(tmp_path):
    rng = np.random.default_rng(11)
    write_folder(tmp_path / "train", {"a": random_images(rng, 3, (4, 4, 3)), "b": random_images(rng, 3, (4, 4, 3))})
    write_folder(tmp_path / "small", {"a": random_images(rng, 2, (3, 3, 3)), "b": random_images(rng, 2, (3, 3, 3))})
    write_folder(tmp_path / "gray", {"a": random_images(rng, 2, (4, 4)), "b": random_images(rng, 2, (4, 4))})
    write_folder(tmp_path / "three", {c: random_images(rng, 1, (4, 4, 3)) for c in "abc"})
    train = f"folder:{tmp_path / 'train'}"
    one_line_error(lambda: load_dataset(train, test=f"folder:{tmp_path / 'small'}"), "3x3x3")
    one_line_error(lambda: load_dataset(train, test=f"folder:{tmp_path / 'gray'}"), "1x4x4")
    one_line_error(lambda: load_dataset(train, test=f"folder:{tmp_path / 'three'}"), "3 classes")
    one_line_error(lambda: load_dataset("digits", test="cifar10-mini:test"), "test set")


def test_test_source_with_permuted_class_names(tmp_path):
    x = np.zeros((4, 2, 2), np.uint8)
    train = save_npz(tmp_path / "tr.npz", x=x, y=NPZ_OK_Y, classes=np.array(["cat", "dog"]))
    test = save_npz(tmp_path / "te.npz", x=x, y=NPZ_OK_Y, classes=np.array(["dog", "cat"]))
    one_line_error(lambda: load_dataset(train, test=test), "order")


# ---------------------------------------------------------------- idx:DIR
def idx_folder(tmp_path: Path, n_per_class: int = 10, compress: bool = True):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10, dtype=np.uint8), n_per_class)
    x = rng.integers(0, 256, (len(y), 6, 5), dtype=np.uint8)
    ext = ".gz" if compress else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", x, compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", y, compress)
    return x, y


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_round_trip_and_stratified_split(tmp_path, compress):
    x, y = idx_folder(tmp_path, compress=compress)
    d = load_dataset(f"idx:{tmp_path}", seed=3)
    assert d.shape == (1, 6, 5) and d.classes == [str(i) for i in range(10)]
    assert len(d.x_train) == 80 and len(d.x_test) == 20
    assert torch.bincount(d.y_test, minlength=10).tolist() == [2] * 10
    # every image comes back byte for byte, with its own label
    both = torch.cat([d.x_train, d.x_test])[:, 0].mul(255).round().to(torch.uint8).numpy()
    labels = torch.cat([d.y_train, d.y_test]).numpy()
    order = np.lexsort(both.reshape(len(both), -1).T)
    ref = np.lexsort(x.reshape(len(x), -1).T)
    assert np.array_equal(both[order], x[ref]) and np.array_equal(labels[order], y[ref])


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / "t10k-labels-idx1-ubyte.gz").unlink(), "expected one file matching *-labels-idx1-ubyte"),
    (lambda d: write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8)), "99 images but 7 labels"),
    (lambda d: (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage"), "not readable"),
    (lambda d: write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((5, 2), np.uint8)), "3 dimension"),
    (lambda d: (d / "t10k-images-idx3-ubyte.gz").write_bytes(
        __import__("gzip").compress(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") * 3 + b"\0" * 5)), "truncated"),
    (lambda d: write_idx(d / "t10k-labels-idx1-ubyte.gz", np.full(99, 12, np.uint8)), "class"),
])
def test_idx_errors_are_one_line(tmp_path, damage, match):
    x, y = idx_folder(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x[:99])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:99])
    damage(tmp_path)
    one_line_error(lambda: load_dataset(f"idx:{tmp_path}", seed=0), match)


def test_idx_missing_folder(tmp_path):
    one_line_error(lambda: load_dataset(f"idx:{tmp_path / 'nope'}", seed=0), "is not a folder")


# ---------------------------------------------------------------- issue 18: sizes from files, not allocations

def peak_traced_bytes(fn) -> int:
    """The peak Python/NumPy allocation while fn runs (fn is expected to raise a one-line UserError)."""
    tracemalloc.start()
    try:
        one_line_error(fn)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_npz_member_header_must_match_its_size(tmp_path):
    spec = npz_with_member(tmp_path / "long.npz", (4, 3, 3), bytes(36 + 100))  # 100 bytes more than declared
    one_line_error(lambda: load_split(spec), "header says (4, 3, 3)", "holds 136")
    spec = npz_with_member(tmp_path / "short.npz", (10**6, 10**6), bytes(64))  # 1 TB declared
    one_line_error(lambda: load_split(spec), "1,000,000,000,000 bytes")


def test_npz_member_over_the_byte_limit_is_never_decompressed(tmp_path, monkeypatch):
    import certify.data._common as common

    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros((200, 100, 100), np.uint8), y=np.arange(200) % 2)
    monkeypatch.setattr(common, "MAX_BYTES", 10**6)  # the member holds 2 MB of zeros in a few kB
    assert peak_traced_bytes(lambda: load_split(f"npz:{tmp_path / 'bomb.npz'}")) < 10**6


def test_npz_compressed_and_fortran_order_round_trip(tmp_path):
    rng = np.random.default_rng(12)
    x = np.asfortranarray(rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8))
    y = np.arange(6, dtype=">i4") % 2  # big-endian labels too
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y, classes=np.array(["a", "b"]))
    x_t, y_t, classes = load_split(f"npz:{tmp_path / 'c.npz'}")
    assert torch.equal(x_t, torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255)
    assert y_t.tolist() == [0, 1, 0, 1, 0, 1] and classes == ["a", "b"]


def test_idx_gzip_is_decompressed_no_further_than_its_header_declares(tmp_path):
    x, y = idx_folder(tmp_path)  # then the images file gains 32 MB of zeros (32 kB compressed)
    padded = np.concatenate([x.ravel(), np.zeros(32 << 20, np.uint8)])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", padded, dims=x.shape)
    peak = peak_traced_bytes(lambda: load_dataset(f"idx:{tmp_path}", seed=0))
    assert peak < 4 << 20


def test_folder_image_sides_are_checked_from_the_header(tmp_path):
    rng = np.random.default_rng(13)
    write_folder(tmp_path, {"a": random_images(rng, 2, (8, 8)), "b": random_images(rng, 2, (8, 8))})
    header_only_png(tmp_path / "a" / "000.png", 5000)  # under Pillow's limit, over ours
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), "5000 pixels high and 5000 wide, over the limit of 4096")


def test_folder_decompression_bomb_is_refused_without_a_warning(tmp_path):
    rng = np.random.default_rng(14)
    write_folder(tmp_path, {"a": random_images(rng, 2, (8, 8)), "b": random_images(rng, 2, (8, 8))})
    header_only_png(tmp_path / "a" / "000.png", 10_000)  # Pillow only warns (on stderr) at 1e8 pixels
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        one_line_error(lambda: load_split(f"folder:{tmp_path}"), "image too large to decode")
    assert [w.message for w in seen] == []


def test_folder_decoded_size_is_checked_after_the_first_image(tmp_path, monkeypatch):
    import certify.data._common as common

    rng = np.random.default_rng(15)
    write_folder(tmp_path, {"a": random_images(rng, 3, (64, 64)), "b": random_images(rng, 3, (64, 64))})
    monkeypatch.setattr(common, "MAX_BYTES", 50_000)  # 6 x 64 x 64 x 3 = 73,728 bytes as RGB, 294,912 as float32
    one_line_error(lambda: load_split(f"folder:{tmp_path}"), "6 images of 64x64", "294,912 bytes")


@pytest.mark.parametrize("arch", MODELS.names())
def test_model_minimum_side_is_what_training_on_one_image_needs(arch):
    from certify.models import build_model, check_input_size

    need = MODELS.get(arch).min_side

    def train_step(side: int) -> None:
        model = build_model(arch, (1, side, side), 2, 0).train()
        model(torch.zeros(1, 1, side, side)).sum().backward()  # a last batch of one image

    train_step(need)
    check_input_size(arch, (1, need, need))
    if need > 1:
        with pytest.raises((ValueError, RuntimeError, UserError)):  # UserError: the ViT's patch grid
            train_step(need - 1)
        one_line_error(lambda: check_input_size(arch, (1, need - 1, need + 5)), f"at least {need}x{need}")
