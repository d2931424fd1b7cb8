"""Releases made outside this tool: `delta:PATH` perturbations (.pt, .npy, .npz), `pt:PATH` images,
and the bounded, one-line reading of the files they come in."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from certify.data import load_split
from certify.data.release import load_release
from certify.errors import UserError


def one_line(fn, *match) -> str:
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg.strip()
    for m in match:
        assert m in msg, f"{m!r} not in {msg!r}"
    return msg


@pytest.fixture
def clean():
    """6 RGB images of 5×4 on the 1/255 grid, some pixels at 0 and 1 (where clipping shows), 2 classes."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 5, 4), generator=g).float() / 255
    x[:, 0, 0, 0], x[:, 0, 0, 1] = 1.0, 0.0
    return x, torch.tensor([0, 1, 0, 1, 0, 1])


def _delta(shape=(6, 3, 5, 4), seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 2 - 1) * 8 / 255  # ±8/255, off the grid


def _expected(x, delta):
    return torch.round((x + delta).clamp(0, 1) * 255) / 255


def _write(path, array, form):
    if form == "pt-tensor":
        torch.save(array, path)
    elif form == "pt-dict":
        torch.save({"perturbation": array, "epsilon": 8 / 255}, path)  # one tensor among other values
    elif form == "npy":
        np.save(path, array.numpy())
    else:
        np.savez(path, anything=array.numpy())
    return f"delta:{path}"


SUFFIX = {"pt-tensor": "pt", "pt-dict": "pt", "npy": "npy", "npz": "npz"}


@pytest.mark.parametrize("form", list(SUFFIX))
@pytest.mark.parametrize("channels_last", [False, True])
def test_delta_is_added_clipped_and_rounded(tmp_path, clean, form, channels_last):
    x, y = clean
    delta = _delta()
    stored = delta.permute(0, 2, 3, 1).contiguous() if channels_last else delta
    spec = _write(tmp_path / f"d.{SUFFIX[form]}", stored, form)
    released, labels = load_release(spec, x, y)
    assert torch.equal(labels, y)
    assert torch.equal(released, _expected(x, delta))
    assert float(released.max()) <= 1 and float(released.min()) >= 0
    assert torch.equal(released[:, 0, 0, 0] >= 1 - 8 / 255, torch.ones(6, dtype=torch.bool))  # clipped at 1
    assert torch.equal(torch.round(released * 255) / 255, released)  # on the 8-bit grid


def test_delta_of_grayscale_given_as_n_h_w(tmp_path):
    x = torch.zeros(4, 1, 3, 3)
    delta = torch.full((4, 3, 3), 2 / 255)
    released, _ = load_release(_write(tmp_path / "d.npy", delta, "npy"), x, torch.tensor([0, 1, 0, 1]))
    assert torch.equal(released, torch.full((4, 1, 3, 3), 2 / 255))


def test_delta_below_half_a_level_rounds_away(tmp_path, clean):
    x, y = clean
    released, _ = load_release(_write(tmp_path / "d.pt", torch.full(x.shape, 0.4 / 255), "pt-tensor"), x, y)
    assert torch.equal(released, x)


@pytest.mark.parametrize("values, dtype, match", [
    (12.0, torch.float32, "divide it by 255"),  # a perturbation in pixel units, saved as float
    (1.0, torch.float32, "divide it by 255"),  # whole numbers: one level in pixel units
    (-255.0, torch.float64, "divide it by 255"),
    (300.0, torch.float32, "must lie in [-1, 1]"),
    (float("nan"), torch.float32, "NaN"),
    (3, torch.int16, "dtype int16"),
    (3, torch.uint8, "dtype uint8"),
])
def test_delta_values_are_checked(tmp_path, clean, values, dtype, match):
    x, y = clean
    d = torch.zeros(x.shape, dtype=dtype)
    d[0, 0, 0, 0] = values
    msg = one_line(lambda: load_release(_write(tmp_path / "d.pt", d, "pt-tensor"), x, y), match, str(tmp_path / "d.pt"))
    if match == "divide it by 255":
        assert "0..255" in msg


@pytest.mark.parametrize("shape, match", [
    ((5, 3, 5, 4), "holds 5 images but the clean set has 6"),
    ((7, 5, 4, 3), "holds 7 images but the clean set has 6"),
    ((6, 3, 4, 5), "like the clean images: 6×3×5×4 or 6×5×4×3"),
    ((6, 1, 5, 4), "like the clean images"),
    ((6, 3, 5, 4, 1), "expected N×C×H×W, N×H×W×C or N×H×W"),
])
def test_delta_shape_must_match_the_clean_set(tmp_path, clean, shape, match):
    x, y = clean
    one_line(lambda: load_release(_write(tmp_path / "d.npy", torch.zeros(shape), "npy"), x, y), match)


@pytest.mark.parametrize("content, match", [
    ([1.0, 2.0], "holds a list"),
    ("a string", "holds a str"),
    ({"a": torch.zeros(6, 3, 5, 4), "b": torch.zeros(6, 3, 5, 4)}, "dict holding 2 tensors (a, b)"),
    ({"epsilon": 0.03}, "dict holding 0 tensors"),
])
def test_pt_without_exactly_one_tensor_is_refused(tmp_path, clean, content, match):
    x, y = clean
    torch.save(content, tmp_path / "d.pt")
    one_line(lambda: load_release(f"delta:{tmp_path / 'd.pt'}", x, y), match)


def test_npz_with_several_arrays_is_refused(tmp_path, clean):
    x, y = clean
    np.savez(tmp_path / "d.npz", a=np.zeros((6, 3, 5, 4), np.float32), b=np.zeros(3))
    one_line(lambda: load_release(f"delta:{tmp_path / 'd.npz'}", x, y), "exactly one array, found 2 (a, b)")


class Payload:
    """Not a tensor: the weights-only loader must refuse to build it."""


def test_hostile_pt_files_are_one_line(tmp_path, clean):
    x, y = clean
    torch.save(Payload(), tmp_path / "obj.pt")
    msg = one_line(lambda: load_release(f"delta:{tmp_path / 'obj.pt'}", x, y), "weights_only=True", "Payload")
    assert "\x1b" not in msg and "trust" not in msg  # not torch's advice to load it unsafely
    # a shape that describes 120 GB over a storage of one number
    torch.save(torch.zeros(1).expand(10**5, 3, 100, 100), tmp_path / "big.pt")
    one_line(lambda: load_release(f"delta:{tmp_path / 'big.pt'}", x, y), "over the limit of")
    # the legacy (non-zip) format, a compressed member, a pickle over its limit, junk, a wrong suffix
    torch.save(_delta(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    one_line(lambda: load_release(f"delta:{tmp_path / 'legacy.pt'}", x, y), "legacy format is not read")
    with zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("deflated/data.pkl", b"\x80\x02}q\x00.")
    one_line(lambda: load_release(f"delta:{tmp_path / 'deflated.pt'}", x, y), "is compressed")
    with zipfile.ZipFile(tmp_path / "pickle.pt", "w") as z:
        z.writestr("pickle/data.pkl", b"\x80\x02" + b"N" * 2**21)
    one_line(lambda: load_release(f"delta:{tmp_path / 'pickle.pt'}", x, y), "pickle of 2,097,154 bytes")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY\x01\x00" + b"junk" * 10)
    one_line(lambda: load_release(f"delta:{tmp_path / 'junk.npy'}", x, y), str(tmp_path / "junk.npy"))
    (tmp_path / "d.txt").write_text("0.1")
    one_line(lambda: load_release(f"delta:{tmp_path / 'd.txt'}", x, y), "must end in .pt, .pth, .npy, .npz")
    one_line(lambda: load_release(f"delta:{tmp_path / 'none.pt'}", x, y), "does not exist")


def test_delta_is_a_release_only(tmp_path):
    torch.save(_delta(), tmp_path / "d.pt")
    one_line(lambda: load_split(f"delta:{tmp_path / 'd.pt'}"), "certify audit --release only")
    one_line(lambda: load_split("delta:"), "missing path after 'delta:'")


# ---------------------------------------------------------------- pt:PATH

def test_pt_source_with_labels_is_a_dataset(tmp_path):
    x = torch.randint(0, 256, (6, 4, 5, 3), dtype=torch.uint8)  # channels last
    torch.save({"x": x, "y": torch.tensor([0, 1, 2, 0, 1, 2]), "classes": ["cat", "dog", "eel"]}, tmp_path / "s.pt")
    images, labels, classes = load_split(f"pt:{tmp_path / 's.pt'}")
    assert images.shape == (6, 3, 4, 5) and torch.equal(images, x.permute(0, 3, 1, 2).float() / 255)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2] and classes == ["cat", "dog", "eel"]
    torch.save({"x": x.float() / 255 + 0.3 / 255 * (x < 255), "y": torch.tensor([0, 1, 0, 1, 0, 1])}, tmp_path / "f.pt")
    images, _, classes = load_split(f"pt:{tmp_path / 'f.pt'}")
    assert torch.equal(images, x.permute(0, 3, 1, 2).float() / 255) and classes == ["0", "1"]  # rounded to the grid


@pytest.mark.parametrize("content, match", [
    ({"x": torch.full((4, 1, 3, 3), 2.0), "y": torch.tensor([0, 1, 0, 1])}, "must lie in [0, 1]"),
    ({"x": torch.zeros(4, 1, 3, 3), "y": torch.tensor([0, 1, 0])}, "4 images but y holds 3"),
    ({"x": torch.zeros(4, 1, 3, 3), "y": [0, 1, 0, 1]}, "y is a list"),
    ({"x": torch.zeros(4, 1, 3, 3), "y": torch.tensor([0, 1, 0, 1]), "classes": [1, 2]}, "list of strings"),
    ({"x": torch.zeros(4, 2, 5, 5), "y": torch.tensor([0, 1, 0, 1])}, "C 1 or 3"),
    ({"images": torch.zeros(4, 1, 3, 3)}, "keys images"),
    (torch.zeros(4, 1, 3, 3), "images without labels"),
])
def test_pt_source_errors(tmp_path, content, match):
    torch.save(content, tmp_path / "s.pt")
    one_line(lambda: load_split(f"pt:{tmp_path / 's.pt'}"), match)


def test_pt_images_alone_pair_with_the_clean_labels(tmp_path, clean):
    x, y = clean
    torch.save((x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous(), tmp_path / "r.pt")
    released, labels = load_release(f"pt:{tmp_path / 'r.pt'}", x, y)
    assert torch.equal(released, x) and torch.equal(labels, y)
    one_line(lambda: load_release(f"pt:{tmp_path / 'r.pt'}", x[:5], y[:5]), "holds 6 images but the clean set has 5")
