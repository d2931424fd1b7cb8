"""A hostile-input pass over the CLI, repeatable: every probe runs `python -m certify.cli` in a
subprocess under an address-space cap and a timeout, and is judged against the README's promise.

    PYTHONPATH=. python bench/hostile_probe.py [--only SUBSTR] [--jobs 2] [--cap-gb 8] [--timeout 60]

Expectations: `bad` (the default) must exit 2 with exactly one stderr line `certify: error: ...`,
no traceback, nothing added to or changed in --out, nothing in the cache; `late` (a plugin failing
inside a task) the same, except that run.json (the --resume checkpoint) and the finished tasks'
artifacts stay; `ok` must exit 0 without
a traceback (a corrupt cache is rebuilt, not fatal); `either` may do either, cleanly. A probe that
breaks its expectation is BROKEN in the table (exit status 1 if any is). Inputs are built from
content (CI runs as root). Fourth pass of issue 32 (reports/RELIABILITY.md).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "KEEP-ME.txt"
TINY = ("train: {epochs: 1, batch_size: 256}\nsurrogate: {epochs: 1}\nsmoothing: {chunk: 10, sigma_draws: 5}\n"
        "independent_models: 0\n")
RUN = ["run", "--executor", "serial", "--cache-dir", "{CACHE}", "--out", "{OUT}", "--config", "{W}/tiny.yaml",
       "--skip", "certify,scores,recovery", "--defense", "", "--poison", "random", "--samples", "20"]
DIGITS = RUN + ["--dataset", "digits"]
AUDIT = ["audit", "--executor", "serial", "--cache-dir", "{CACHE}", "--out", "{OUT}", "--config", "{W}/tiny.yaml",
         "--samples", "20", "--skip", "certify,scores,recovery", "--defense", "", "--clean", "npz:{W}/clean.npz",
         "--test", "npz:{W}/test.npz"]
# an export needs an empty or new folder: a new one inside {OUT} (the sentinel beside it must survive)
POISON = ["poison", "--dataset", "digits", "--format", "npz", "--out", "{OUT}/export", "--cache-dir", "{CACHE}"]


# --- the world: every input, built from content ------------------------------------------------------
def _pairs(n=20, hw=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, hw, hw), dtype=np.uint8), np.arange(n, dtype=np.int64) % 2


def _png(path: Path, size=(8, 8), mode="L", value=128, fmt="PNG") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path, format=fmt)


def _folder(root: Path, classes=("a", "b"), per=3, size=(8, 8)) -> Path:
    for c in classes:
        for i in range(per):
            _png(root / c / f"{i}.png", size=size, value=40 * i + 10)
    return root


def _npy_bytes(shape, descr="|u1", payload=b"", fortran=False) -> bytes:
    import io

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return head.getvalue() + payload


def _npz_members(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _fake_dist(site: Path, name: str, group: str, ep: str, module: str, source: str) -> Path:
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{ep} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    return site


def build_world(w: Path) -> None:
    import torch

    (w / "tiny.yaml").write_text(TINY)
    (w / "plain-file").write_text("a regular file\n")
    os.mkfifo(w / "fifo")
    x, y = _pairs()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    np.savez(w / "clean.npz", x=x, y=y)
    np.savez(w / "test.npz", x=_pairs(10, seed=1)[0], y=np.arange(10) % 2)

    # pt: sources
    pt = {
        "nested-x": {"x": {"inner": xt}, "y": yt},
        "nested-list-x": {"x": [xt], "y": yt},
        "zero-dim-x": {"x": torch.tensor(3.0), "y": yt},
        "zero-dim-y": {"x": xt, "y": torch.tensor(1)},
        "five-d": {"x": xt.reshape(20, 1, 1, 8, 8), "y": yt},
        "zero-images": {"x": torch.zeros(0, 8, 8, dtype=torch.uint8), "y": torch.zeros(0, dtype=torch.int64)},
        "bool-labels": {"x": xt, "y": yt.bool()},
        "uint8-labels-255": {"x": xt, "y": torch.where(torch.arange(20) == 0, 255, yt).to(torch.uint8)},
        "int64-labels-huge": {"x": xt, "y": torch.where(torch.arange(20) == 0, 2**62, yt)},
        "labels-2d": {"x": xt, "y": yt[:, None]},
        "labels-list": {"x": xt, "y": y.tolist()},
        "nan-x": {"x": torch.full((20, 8, 8), float("nan")), "y": yt},
        "inf-x-half": {"x": torch.full((20, 8, 8), float("inf"), dtype=torch.float16), "y": yt},
        "complex-x": {"x": xt.to(torch.complex64), "y": yt},
        "sparse-x": {"x": xt.float().div(255).to_sparse(), "y": yt},
        "quantized-x": {"x": torch.quantize_per_tensor(xt.float() / 255, 0.01, 0, torch.quint8), "y": yt},
        "int32-x": {"x": xt.int(), "y": yt},
        "transposed-x": {"x": xt.float().div(255).transpose(1, 2), "y": yt},
        "one-pixel": {"x": xt[:, :1, :1].contiguous(), "y": yt},
        "classes-not-strings": {"x": xt, "y": yt, "classes": [1, 2]},
        "classes-too-few": {"x": xt, "y": yt, "classes": ["a"]},
        "uint16-x": {"x": xt.to(torch.uint16), "y": yt},
        "x-neg-float": {"x": -xt.float(), "y": yt},
    }
    for name, obj in pt.items():
        torch.save(obj, w / f"{name}.pt")
    torch.save({"x": xt, "y": yt, "extra": argparse.Namespace(a=1)}, w / "pickled-object.pt")  # weights_only refuses it
    torch.save({"x": xt, "y": yt}, w / "ok.pt")
    # a storage of 8 floats viewed as 2**40 values by rewriting the saved size (torch.load checks bounds?)
    torch.save({"x": torch.zeros(8), "y": yt}, w / "lying-size.pt")
    data = (w / "lying-size.pt").read_bytes()
    # the pickle names the tensor's size as a tuple (8,): rewrite 8 -> a large value in the pickle
    with zipfile.ZipFile(w / "lying-size.pt") as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    pkl = next(k for k in members if k.endswith("data.pkl"))
    # BININT1 8 then TUPLE1 ... the size; replace "K\x08\x85" (BININT1 8, TUPLE1) with BININT 2**30
    members[pkl] = members[pkl].replace(b"K\x08\x85", b"J\x00\x00\x00\x40\x85", 1)
    with zipfile.ZipFile(w / "lying-size.pt", "w", zipfile.ZIP_STORED) as z:
        for k, v in members.items():
            z.writestr(zipfile.ZipInfo(k), v)
    del data
    # delta:
    torch.save(torch.zeros(20, 8, 8, dtype=torch.float64).fill_(float("nan")), w / "delta-nan.pt")
    torch.save(torch.zeros(20, 8, 8, dtype=torch.bool), w / "delta-bool.pt")
    torch.save(torch.zeros(()), w / "delta-0dim.pt")
    torch.save({"a": torch.zeros(20, 8, 8), "b": {"c": torch.zeros(1)}}, w / "delta-nested.pt")
    torch.save(torch.full((20, 8, 8), -0.0), w / "delta-negzero.pt")
    np.save(w / "delta-5d.npy", np.zeros((20, 1, 1, 8, 8), np.float32))
    np.save(w / "delta-u64.npy", np.zeros((20, 8, 8), np.uint64))
    np.save(w / "delta-complex.npy", np.zeros((20, 8, 8), np.complex64))
    np.save(w / "delta-big-endian.npy", np.zeros((20, 8, 8), ">f4"))
    (w / "delta-header-neg.npy").write_bytes(_npy_bytes((-20, -64), "<f4", bytes(20 * 64 * 4)))
    (w / "delta-header-2e70.npy").write_bytes(_npy_bytes((0, 2**70), "<f4"))
    # npz:
    _npz_members(w / "npz-huge-zero-dim.npz", {"x.npy": _npy_bytes((0, 2**70, 8)),
                                               "y.npy": _npy_bytes((0,), "<i8")})
    _npz_members(w / "npz-negative-dims.npz", {"x.npy": _npy_bytes((-20, -8, 8), payload=bytes(20 * 64)),
                                               "y.npy": _npy_bytes((20,), "<i8", y.tobytes())})
    np.savez(w / "npz-5d.npz", x=x.reshape(20, 1, 8, 8, 1), y=y)
    np.savez(w / "npz-zero-images.npz", x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))
    np.savez(w / "npz-bool-x.npz", x=x > 128, y=y)
    np.savez(w / "npz-bool-y.npz", x=x, y=y.astype(bool))
    np.savez(w / "npz-u64-y.npz", x=x, y=np.where(np.arange(20) == 0, 2**64 - 1, y).astype(np.uint64))
    np.savez(w / "npz-y-0d.npz", x=x, y=np.array(1))
    np.savez(w / "npz-y-strings.npz", x=x, y=np.array(["a", "b"] * 10))
    np.savez(w / "npz-classes-2d.npz", x=x, y=y, classes=np.array([["a", "b"]]))
    np.savez(w / "npz-structured.npz", x=np.zeros(20, dtype=[("a", "u1", (8, 8))]), y=y)
    np.savez(w / "npz-fortran.npz", x=np.asfortranarray(x), y=y)
    np.savez(w / "npz-big-endian-f4.npz", x=(x / 255).astype(">f4"), y=y)
    np.savez(w / "npz-zero-pixels.npz", x=np.zeros((20, 8, 8), np.uint8), y=y)
    np.savez(w / "npz-1x1.npz", x=x[:, :1, :1], y=y)
    np.savez(w / "npz-4-channels.npz", x=np.zeros((20, 8, 8, 4), np.uint8), y=y)
    # a 1.5 GiB uint8 x, deflated to about 1.5 MB: within "one array <= 4 GiB", but float32 is 6 GiB
    n = 1536 * 2**20 // (64 * 64)
    with zipfile.ZipFile(w / "npz-1.5gib-uint8.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(_npy_bytes((n, 64, 64)))
            chunk = bytes(64 * 64 * 4096)
            for _ in range(n // 4096):
                f.write(chunk)
        z.writestr("y.npy", _npy_bytes((n,), "<i8", (np.arange(n) % 2).astype("<i8").tobytes()))
    # folder:
    _folder(w / "f-1x1", size=(1, 1))
    loop = _folder(w / "f-symlink-loop")
    os.symlink(loop / "a" / "loop.png", loop / "a" / "loop.png")
    dirloop = _folder(w / "f-dir-loop")
    os.symlink(dirloop, dirloop / "c")
    trunc = _folder(w / "f-truncated-jpeg")
    _png(trunc / "a" / "9.jpg", size=(8, 8), fmt="JPEG")
    data = (trunc / "a" / "9.jpg").read_bytes()
    (trunc / "a" / "9.jpg").write_bytes(data[: len(data) // 2])
    for fmt, ext in (("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tif"), ("JPEG", "jpg")):
        _folder(w / f"f-bomb-{ext}")
        _png(w / f"f-bomb-{ext}" / "a" / f"big.{ext}", size=(8, 8), fmt=fmt)
    _set_declared_size(w, 30000)
    nonimg = _folder(w / "f-non-image")
    (nonimg / "b" / "notes.txt").write_text("hello\n")
    pdf = _folder(w / "f-pdf-as-png")
    (pdf / "b" / "x.png").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    _folder(w / "f-one-image-per-class", per=1)
    _folder(w / "f-4096", per=1, size=(4096, 4096))
    cmyk = _folder(w / "f-16bit")
    from PIL import Image

    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(cmyk / "a" / "0.png")
    # cache artifacts are written later, per probe
    # configs
    cfg = {
        "billion-laughs": "poisons: [&a [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
            f"&{n} [" + ", ".join([f"*{p}"] * 10) + "]" for p, n in zip("abcdefg", "bcdefgh")) + "]\n",
        "laughs-in-params": "l0: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
            f"l{i}: &a{i} [{', '.join([f'*a{i - 1}' if i > 1 else '*a'] * 10)}]\n" for i in range(1, 8)).replace(
            "l", "x_l") + "poison_params: {random: {epsilon: *a7}}\n",
        "laughs-inline-params": "poison_params: {random: {epsilon: [&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
            f"&{n} [" + ", ".join([f"*{p}"] * 10) + "]" for p, n in zip("abcdefg", "bcdefgh")) + "]}}\n",
        "recursive-list": "poisons: &a [random, *a]\n",
        "recursive-map": "poison_params: &a {random: *a}\n",
        "recursive-eta": "eta_sigma: &a [0.5, *a]\n",
        "python-object": "seed: !!python/object:os.system {}\n",
        "python-name": "seed: !!python/name:os.system\n",
        "set-tag": "poisons: !!set {random: null}\n",
        "binary-tag": "samples: !!binary AAAA\n",
        "timestamp-seed": "seed: 2001-12-14t21:59:43.10-05:00\n",
        "unhashable-key": "? [a, b]\n: 1\n",
        "merge-key": "base: &b {epochs: 1}\ntrain: {<<: *b, lr: 0.1}\n",
        "neg-zero-sigma": "sigma: -0.0\n",
        "inf-q": "q: .inf\n",
        "nan-alpha": "alpha: .NaN\n",
        "seeds-huge": "seeds: 1e400\n",
        "threads-neg-zero": "threads: -0\n",
        "image-size-float": "image_size: 8.0\n",
        "image-size-bool": "image_size: true\n",
        "victim-train": "victim_train: {epochs: 1}\n",
        "null-section": "train: ~\n",
        "empty-poisons": "poisons: []\n",
        "dataset-int": "dataset: 5\n",
        "skip-dict": "skip: {certify: 1}\n",
        "defenses-null-item": "defenses: [~]\n",
        "eta-dup": "eta_sigma: [0.5, 0.5, -0.0]\n",
        "cache-dir-int": "cache_dir: 5\n",
        "out-list": "out: [a]\n",
        "bom": "\ufeffseed: 1\n",
        "nul-byte": "seed: 1\x00\n",
        "crlf": "seed: 1\r\ntrain: {epochs: 1}\r\n",
    }
    for name, text in cfg.items():
        (w / f"{name}.yaml").write_text(text)
    # plugin sites, one per plugin (a broken one must not disturb the others)
    for pid, (group, source) in PLUGINS.items():
        mod = "plug_h4_" + pid.replace("-", "_")
        _fake_dist(w / "sites" / pid, f"h4-{pid}", group, "m", mod, source)


def _set_declared_size(w: Path, side: int) -> None:
    """Rewrite the declared size of the 'big' image of each f-bomb-* folder in its header."""
    import struct

    for ext in ("gif", "bmp", "tif", "jpg"):
        p = w / f"f-bomb-{ext}" / "a" / f"big.{ext}"
        b = bytearray(p.read_bytes())
        if ext == "gif":
            b[6:10] = struct.pack("<HH", side, side)
            i = b.index(b"\x2c")  # image descriptor
            b[i + 5:i + 9] = struct.pack("<HH", side, side)
        elif ext == "bmp":
            b[18:26] = struct.pack("<ii", side, side)
        elif ext == "tif":
            # tags 256 (width) and 257 (length): SHORT or LONG values in the first IFD
            off = struct.unpack("<I", b[4:8])[0]
            count = struct.unpack("<H", b[off:off + 2])[0]
            for k in range(count):
                e = off + 2 + 12 * k
                tag, typ = struct.unpack("<HH", b[e:e + 4])
                if tag in (256, 257):
                    b[e + 8:e + 12] = struct.pack("<I", side) if typ == 4 else struct.pack("<HH", side, 0)
        else:
            i = b.index(b"\xff\xc0")
            b[i + 5:i + 9] = struct.pack(">HH", side, side)
        p.write_bytes(bytes(b))


# --- plugins: one fake distribution each ----------------------------------------------------------------
def _craft(body: str, extra: str = "") -> tuple[str, str]:
    return "certify.poisons", f"""
import sys, torch
from attacks.base import POISONS, PoisonParams
{extra}
@POISONS.register("m", "a hostile craft", PoisonParams)
def craft(ctx, p):
    {body}
"""


def _defense(hooks: str) -> tuple[str, str]:
    return "certify.defenses", f"""
import torch
from defenses.base import DEFENSES, Defense

@DEFENSES.register("m", "a hostile defense")
def make(params):
    return Defense("m", {hooks})
"""


def _recovery(body: str) -> tuple[str, str]:
    return "certify.recovery", f"""
from dataclasses import dataclass
from typing import ClassVar
from attacks.recovery import RECOVERY

@dataclass
class P:
    bn: ClassVar[str] = "frozen"
    constraint: ClassVar[str] = "ball"

@RECOVERY.register("m", "a hostile recovery attack", P)
def still(inputs, params):
    {body}
"""


SUBCLASS = """
class Evil(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError("evil subclass")
"""
PLUGINS = {
    "craft-numpy": _craft("return ctx.x.numpy()"),
    "craft-int-tensor": _craft("return (ctx.x * 255).to(torch.int32)"),
    "craft-requires-grad": _craft("return ctx.x.clone().requires_grad_(True)"),
    "craft-meta": _craft("return torch.empty_like(ctx.x, device='meta')"),
    "craft-parameter": _craft("return torch.nn.Parameter(ctx.x.clone())"),
    "craft-evil-subclass": _craft("return ctx.x.clone().as_subclass(Evil)", SUBCLASS),
    "craft-sparse": _craft("return ctx.x.to_sparse()"),
    "craft-expanded": _craft("return ctx.x[:1].expand_as(ctx.x)"),
    "craft-generator-exit": _craft("raise GeneratorExit('bye')"),
    "craft-base-exception": _craft("raise Custom('x')", "class Custom(BaseException):\n    pass\n"),
    # over its budget only when measured against the clean set as it was (not as the plugin left it)
    "craft-mutates-clean": _craft("ctx.x.add_(0.5).clamp_(0, 1)\n    return ctx.x.clone()"),
    "craft-returns-tuple": _craft("return (ctx.x,)"),
    "craft-half": _craft("return ctx.x.half()"),
    "craft-noncontig": _craft("return ctx.x.transpose(2, 3).contiguous().transpose(2, 3)"),
    "params-validate-raises": ("certify.poisons", """
from dataclasses import dataclass
from attacks.base import POISONS, PoisonParams

@dataclass
class P(PoisonParams):
    def validate(self, where):
        raise ValueError("validate broke")

POISONS.register("m", "params whose validate raises", P)(lambda ctx, p: ctx.x)
"""),
    "params-epsilon-for-raises": ("certify.poisons", """
from dataclasses import dataclass
from attacks.base import POISONS, PoisonParams

@dataclass
class P(PoisonParams):
    def epsilon_for(self, shape):
        raise ValueError("epsilon_for broke")

POISONS.register("m", "params whose epsilon_for raises", P)(lambda ctx, p: ctx.x)
"""),
    "params-default-factory-raises": ("certify.poisons", """
from dataclasses import dataclass, field
from attacks.base import POISONS, PoisonParams

def boom():
    raise ValueError("default broke")

@dataclass
class P(PoisonParams):
    k: int = field(default_factory=boom)

POISONS.register("m", "params whose default raises", P)(lambda ctx, p: ctx.x)
"""),
    "defense-bt-shape": _defense("batch_transform=lambda x, y, g: (x[:, :, :4], y)"),
    "defense-bt-float64": _defense("batch_transform=lambda x, y, g: (x.double(), y)"),
    "defense-bt-nan": _defense("batch_transform=lambda x, y, g: (x * float('nan'), y)"),
    "defense-bt-none": _defense("batch_transform=lambda x, y, g: None"),
    "defense-bt-labels-oob": _defense("batch_transform=lambda x, y, g: (x, y + 100)"),
    "defense-bt-three": _defense("batch_transform=lambda x, y, g: (x, y, y)"),
    "defense-prepare-none": _defense("prepare=lambda x, y, s: None"),
    "defense-prepare-shape": _defense("prepare=lambda x, y, s: (x[:5], y)"),
    "defense-prepare-labels-float": _defense("prepare=lambda x, y, s: (x, y.float())"),
    "defense-loss-vector": _defense("loss_fn=lambda m, x, y, g: torch.nn.functional.cross_entropy(m(x), y, "
                                    "reduction='none')"),
    "defense-loss-float": _defense("loss_fn=lambda m, x, y, g: 1.0"),
    "defense-loss-nan": _defense("loss_fn=lambda m, x, y, g: torch.nn.functional.cross_entropy(m(x), y) * "
                                 "float('nan')"),
    "defense-no-hooks": _defense("prepare=None"),
    "recovery-none": _recovery("return None"),
    "recovery-short": _recovery("return []"),
    "recovery-missing-accuracy": _recovery("return [{'eta': e} for e in inputs.etas]"),
    "recovery-nan": _recovery("return [{'eta': e, 'accuracy': float('nan')} for e in inputs.etas]"),
    "recovery-string": _recovery("return [{'eta': e, 'accuracy': 'high'} for e in inputs.etas]"),
    "recovery-tensor": _recovery("import torch\n    return [{'eta': e, 'accuracy': torch.tensor(0.5)} for e in "
                                 "inputs.etas]"),
    "recovery-over-one": _recovery("return [{'eta': e, 'accuracy': 7.0} for e in inputs.etas]"),
}
PLUGIN_RUN = ["run", "--executor", "serial", "--cache-dir", "{CACHE}", "--out", "{OUT}", "--config",
              "{W}/tiny.yaml", "--samples", "20", "--dataset", "digits"]
REC_CFG = TINY + "recovery: {methods: [m], eta_sigma: [0.5]}\n"


# --- probe set-ups of --out or the cache --------------------------------------------------------------
def _artifact(kind: str):
    """A set-up that runs a good tiny run into a throw-away out (filling the cache), then spoils every
    cache artifact of `kind` (craft-* and model-* as `spoil` says)."""
    def setup(out: Path, cache: Path, w: Path, spoil) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = _fill(DIGITS, w, out.parent / "warm", cache)
        subprocess.run([sys.executable, "-m", "certify.cli", "--quiet", *args], env=env, capture_output=True,
                       timeout=120, check=True)
        found = sorted(p for p in cache.rglob(f"{kind}-*.pt"))
        assert found, f"no {kind} artifacts in {cache}"
        for p in found:
            spoil(p)
    return setup


def _spoil_dir(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _spoil_fifo(p: Path) -> None:
    p.unlink()
    os.mkfifo(p)


def _spoil_truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:100])


def _spoil_other_pickle(p: Path) -> None:
    import torch

    torch.save({"state": {"junk": torch.zeros(3)}, "history": {}, "released": torch.zeros(3)}, p)


def _spoil_meta(p: Path) -> None:
    import torch

    a = torch.load(p, weights_only=True)
    a["released"] = torch.empty_like(a["released"], device="meta")
    torch.save(a, p)


def _spoil_state_shape(p: Path) -> None:
    import torch

    a = torch.load(p, weights_only=True)
    state = a.get("state")
    if isinstance(state, dict):
        a["state"] = {k: torch.zeros(2, dtype=v.dtype) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(a, p)


def _spoil_fields(p: Path) -> None:
    import torch

    a = torch.load(p, weights_only=True)
    torch.save({k: "junk" for k in a}, p)


def _resume(text: str):
    def setup(out: Path, cache: Path, w: Path, _=None) -> None:
        (out / "run.json").write_text(text)
    return setup


def _out_holds(kind: str, name: str):
    def setup(out: Path, cache: Path, w: Path, _=None) -> None:
        p = out / name
        if kind == "dir":
            p.mkdir()
        elif kind == "file":
            p.write_text("not a folder\n")
        elif kind == "fifo":
            os.mkfifo(p)
    return setup


# (id, argv, expectation, set-up or None, spoil or None, env: plugin site id or None, extra config text)
P = []


def probe(pid, argv, expect="bad", setup=None, spoil=None, site=None):
    P.append((pid, argv, expect, setup, spoil, site))


def define() -> None:
    # plugins
    for pid in PLUGINS:
        if pid.startswith("craft-") or pid.startswith("params-"):
            expect = "either" if pid in ("craft-requires-grad", "craft-parameter", "craft-noncontig") else "bad"
            probe(pid, POISON + ["--poison", "m"], expect, site=pid)
        elif pid.startswith("defense-"):
            expect = "either" if pid == "defense-no-hooks" else "late"  # fails inside training
            probe(pid, PLUGIN_RUN + ["--poison", "random", "--skip", "certify,scores,recovery", "--defense", "m"],
                  expect, site=pid)
        elif pid.startswith("recovery-"):
            probe(pid, PLUGIN_RUN + ["--poison", "random", "--skip", "scores", "--defense", "", "--config",
                                     "{W}/rec.yaml", "--sigma", "0.01"], "late", site=pid)
    # pt:
    for name in ("nested-x", "nested-list-x", "zero-dim-x", "zero-dim-y", "five-d", "zero-images", "bool-labels",
                 "uint8-labels-255", "int64-labels-huge", "labels-2d", "labels-list", "nan-x", "inf-x-half",
                 "complex-x", "sparse-x", "quantized-x", "int32-x", "one-pixel", "classes-not-strings",
                 "classes-too-few", "uint16-x", "x-neg-float", "pickled-object", "lying-size"):
        probe(f"pt-{name}", DIGITS + ["--dataset", f"pt:{{W}}/{name}.pt"])
    probe("pt-transposed-x", DIGITS + ["--dataset", "pt:{W}/transposed-x.pt"], "ok")
    probe("pt-fifo", DIGITS + ["--dataset", "pt:{W}/fifo"])
    probe("pt-dev-zero", DIGITS + ["--dataset", "pt:/dev/zero"])
    probe("pt-a-folder", DIGITS + ["--dataset", "pt:{W}/sites"])
    # delta:
    for name in ("delta-nan.pt", "delta-bool.pt", "delta-0dim.pt", "delta-nested.pt", "delta-5d.npy",
                 "delta-u64.npy", "delta-complex.npy", "delta-header-neg.npy", "delta-header-2e70.npy"):
        if name == "delta-nested.pt":
            continue
        probe(name.replace(".", "-"), AUDIT + ["--release", f"delta:{{W}}/{name}"])
    # a dict holding one tensor at its top level (a nested dict is not looked into): a zero perturbation
    probe("delta-nested-pt-top-level", AUDIT + ["--release", "delta:{W}/delta-nested.pt"], "either")
    probe("delta-negzero-pt", AUDIT + ["--release", "delta:{W}/delta-negzero.pt"], "either")
    probe("delta-big-endian-npy", AUDIT + ["--release", "delta:{W}/delta-big-endian.npy"], "either")
    # npz:
    for name in ("npz-huge-zero-dim", "npz-negative-dims", "npz-5d", "npz-zero-images", "npz-bool-x", "npz-bool-y",
                 "npz-u64-y", "npz-y-0d", "npz-y-strings", "npz-classes-2d", "npz-structured", "npz-1x1",
                 "npz-4-channels", "npz-1.5gib-uint8"):
        probe(name, DIGITS + ["--dataset", f"npz:{{W}}/{name}.npz"])
    for name in ("npz-fortran", "npz-big-endian-f4", "npz-zero-pixels"):
        probe(name, DIGITS + ["--dataset", f"npz:{{W}}/{name}.npz"], "either")
    # --image-size
    for v in ("0", "-1", "4097", "1", str(10**30), "nan", "1e3", "-0", "0x10"):
        probe(f"image-size-{v[:12]}", DIGITS + ["--image-size", v])
    probe("image-size-2-folder", DIGITS + ["--dataset", "folder:{W}/f-1x1", "--image-size", "2"])
    probe("image-size-folder-4096-to-8", DIGITS + ["--dataset", "folder:{W}/f-4096", "--image-size", "8"], "either")
    # folder:
    for name in ("f-1x1", "f-symlink-loop", "f-dir-loop", "f-truncated-jpeg", "f-bomb-gif", "f-bomb-bmp",
                 "f-bomb-tif", "f-bomb-jpg", "f-non-image", "f-pdf-as-png", "f-one-image-per-class"):
        probe(f"folder-{name[2:]}", DIGITS + ["--dataset", f"folder:{{W}}/{name}"])
    probe("folder-16bit", DIGITS + ["--dataset", "folder:{W}/f-16bit"], "either")
    # special files
    probe("out-is-fifo", DIGITS + ["--out", "{W}/fifo"])
    probe("out-dev-null", DIGITS + ["--out", "/dev/null"])
    probe("cache-dir-is-file", DIGITS + ["--cache-dir", "{W}/plain-file"])
    probe("cache-dir-is-fifo", DIGITS + ["--cache-dir", "{W}/fifo"])
    probe("config-dev-stdin", DIGITS + ["--config", "/dev/stdin"])
    probe("junit-missing-dir", ["check", "{W}/valid.json", "{W}/valid.json", "--junit", "{W}/nope/j.xml"], "either")
    probe("junit-is-dir", ["check", "{W}/valid.json", "{W}/valid.json", "--junit", "{W}/sites"])
    probe("check-baseline-dir", ["check", "{W}/sites", "{W}/valid.json"])
    probe("report-dir", ["report", "{W}/sites"])
    probe("report-fifo-json", ["report", "{W}/fifo"])
    probe("data-root-file", DIGITS + ["--dataset", "mnist", "--data-root", "{W}/plain-file"])
    probe("out-holds-figures-file", DIGITS, "either", setup=_out_holds("file", "figures"))
    probe("out-holds-report-md-dir", DIGITS, "either", setup=_out_holds("dir", "report.md"))
    probe("out-holds-report-html-fifo", DIGITS, "either", setup=_out_holds("fifo", "report.html"))
    # cache
    for kind in ("craft", "model"):
        for spoil in (_spoil_dir, _spoil_fifo, _spoil_truncate, _spoil_other_pickle, _spoil_fields):
            probe(f"cache-{kind}-{spoil.__name__[7:]}", DIGITS, "ok", setup=_artifact(kind), spoil=spoil)
    probe("cache-craft-meta", DIGITS, "ok", setup=_artifact("craft"), spoil=_spoil_meta)
    probe("cache-model-state-shape", DIGITS, "ok", setup=_artifact("model"), spoil=_spoil_state_shape)
    # resume
    for pid, text in (("resume-empty-object", "{}"), ("resume-config-null", '{"config": null}'),
                      ("resume-config-empty", '{"config": {}}'), ("resume-nan", '{"config": {"seed": NaN}}'),
                      ("resume-deep", '{"config": ' + "[" * 100000 + "]" * 100000 + "}"),
                      ("resume-string", '"run"'), ("resume-utf16", "\ufeff{}"),
                      ("resume-config-string", '{"config": "x"}')):
        probe(pid, DIGITS + ["--resume"], setup=_resume(text))
    probe("resume-run-json-dir", DIGITS + ["--resume"], setup=_out_holds("dir", "run.json"))
    probe("resume-run-json-fifo", DIGITS + ["--resume"], setup=_out_holds("fifo", "run.json"))
    # numbers in flags
    for flag in ("--samples", "--seeds", "--q", "--alpha", "--sigma", "--eta-sigma", "--workers", "--threads",
                 "--connect-timeout", "--independent-models", "--seed"):
        for v in ("nan", "inf", "-inf", "-0", "1e400", str(2**64)):
            if flag in ("--workers", "--threads") and v == "-0":
                continue
            # -0 is 0, a valid value for --seed, --eta-sigma and --independent-models
            valid = v in ("-0", str(2**64)) if flag == "--seed" else v == "-0" and flag in ("--eta-sigma",
                                                                                             "--independent-models")
            probe(f"flag{flag[1:]}-{v[:8]}", DIGITS + [f"{flag}={v}"], "either" if valid else "bad")
    probe("audit-budget-div0", AUDIT + ["--release", "npz:{W}/clean.npz", "--budget", "linf:1/0"])
    probe("audit-budget-nan", AUDIT + ["--release", "npz:{W}/clean.npz", "--budget", "linf:nan"])
    probe("audit-budget-inf", AUDIT + ["--release", "npz:{W}/clean.npz", "--budget", "l2:inf"])
    probe("audit-budget-negzero", AUDIT + ["--release", "npz:{W}/clean.npz", "--budget", "l2:-0"])
    probe("audit-budget-l0-huge", AUDIT + ["--release", "npz:{W}/clean.npz", "--budget", "l0:" + "9" * 400])
    probe("plan-budget-div0", ["plan", "--executor", "serial", "--cache-dir", "{CACHE}", "--out", "{OUT}",
                               "--dataset", "digits", "--poison", "em", "--budgets", "1/0"])
    probe("plan-budget-nan", ["plan", "--executor", "serial", "--cache-dir", "{CACHE}", "--out", "{OUT}",
                              "--dataset", "digits", "--poison", "ar", "--budgets", "nan"])
    probe("plan-target-nan", ["plan", "--executor", "serial", "--cache-dir", "{CACHE}", "--out", "{OUT}",
                              "--dataset", "digits", "--poison", "em", "--budgets", "8/255",
                              "--target-accuracy", "nan"])
    probe("check-tolerance-nan", ["check", "{W}/valid.json", "{W}/valid.json", "--tolerance", "nan"])
    probe("check-alpha-inf", ["check", "{W}/valid.json", "{W}/valid.json", "--alpha", "inf"])
    # YAML
    for name in ("billion-laughs", "laughs-in-params", "laughs-inline-params", "recursive-list", "recursive-map", "recursive-eta",
                 "python-object", "python-name", "set-tag", "binary-tag", "timestamp-seed", "unhashable-key",
                 "merge-key", "neg-zero-sigma", "inf-q", "nan-alpha", "seeds-huge", "threads-neg-zero",
                 "image-size-float", "image-size-bool", "null-section", "empty-poisons", "dataset-int", "skip-dict",
                 "defenses-null-item", "cache-dir-int", "out-list", "nul-byte"):
        # flags win over the file: only --out and --cache-dir are given (the two keys that set them, with them)
        argv = (["run", "--executor", "serial", "--config", f"{{W}}/{name}.yaml"] +
                ([] if name in ("cache-dir-int", "out-list") else ["--out", "{OUT}", "--cache-dir", "{CACHE}"]))
        probe(f"yaml-{name}", argv)
    probe("yaml-victim-train", DIGITS + ["--config", "{W}/victim-train.yaml"], "either")
    probe("yaml-eta-dup", DIGITS + ["--config", "{W}/eta-dup.yaml"], "either")
    probe("yaml-bom", DIGITS + ["--config", "{W}/bom.yaml"], "either")
    probe("yaml-crlf", DIGITS + ["--config", "{W}/crlf.yaml"], "either")
    probe("victims-flag", DIGITS + ["--victims", "cnn"], "either")


# --- running and judging ------------------------------------------------------------------------------
def _fill(args, w: Path, out: Path, cache: Path) -> list[str]:
    return [a.replace("{W}", str(w)).replace("{OUT}", str(out)).replace("{CACHE}", str(cache)) for a in args]


def run_one(p, w: Path, base: Path, cap: int, timeout: float) -> dict:
    pid, argv, expect, setup, spoil, site = p
    out, cache = base / pid / "out", base / pid / "cache"
    out.mkdir(parents=True)
    (out / SENTINEL).write_text("earlier work\n")
    row = {"id": pid, "expect": expect}
    if setup is not None:
        try:
            setup(out, cache, w, spoil)
        except Exception as e:
            return {**row, "rc": None, "verdict": "SETUP", "line": f"set-up failed: {e}"[:160], "mb": 0, "s": 0}
    before = {q.name: (q.read_bytes() if q.is_file() else q.is_dir()) for q in out.iterdir()}
    cached = {q for q in cache.rglob("*")} if cache.exists() else set()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(([str(w / "sites" / site)] if site else []) + [str(ROOT)])}

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "certify.cli", "--quiet", *_fill(argv, w, out, cache)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            preexec_fn=limit)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read()))
    reader.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    _, status, ru = os.wait4(proc.pid, 0)  # the child's own peak RSS
    killer.cancel()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    rc = "timeout" if proc.returncode == -9 and time.time() - t0 >= timeout else proc.returncode
    err = b"".join(chunks).decode("utf-8", "replace")
    secs = time.time() - t0
    lines = [line for line in err.splitlines() if line.strip()]
    after = {q.name: (q.read_bytes() if q.is_file() else q.is_dir()) for q in out.iterdir()} if out.is_dir() else {}
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    new_cache = [q for q in cache.rglob("*") if q.is_file() and q not in cached] if cache.exists() else []
    problems = []
    if "Traceback" in err:
        problems.append("traceback")
    if expect in ("bad", "late") or (expect == "either" and rc != 0):
        if rc != 2:
            problems.append(f"exit {rc}")
        if len(lines) != 1 or not lines[0].startswith("certify: error: "):
            problems.append(f"{len(lines)} stderr lines")
        if expect == "late":  # failed inside a task: run.json (the --resume checkpoint) and finished tasks stay
            changed = [k for k in changed if k != "run.json"]
        if changed:
            problems.append(f"--out changed: {', '.join(changed)[:60]}")
        if new_cache and expect == "bad":
            problems.append(f"{len(new_cache)} cache files")
    elif expect == "ok" and rc != 0:
        problems.append(f"exit {rc}")
    first = next((line for line in lines if "Error" in line or line.startswith("certify:")), lines[-1] if lines else "")
    return {**row, "rc": rc, "verdict": "BROKEN: " + "; ".join(problems) if problems else "ok", "line": first[:220],
            "s": round(secs, 1), "mb": ru.ru_maxrss // 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated substrings of probe ids")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cap-gb", type=float, default=8.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--keep", help="build the world here and keep it (default: a temporary folder)")
    ap.add_argument("--json", help="write the rows here as JSON")
    args = ap.parse_args()
    define()
    wanted = [s for s in args.only.split(",") if s]
    probes = [p for p in P if not wanted or any(s in p[0] for s in wanted)]
    assert len({p[0] for p in P}) == len(P), "probe ids must be unique"
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="hostile-"))
    w, base = tmp / "world", tmp / "runs"
    shutil.rmtree(tmp / "runs", ignore_errors=True)
    if not (w / "tiny.yaml").exists():
        w.mkdir(parents=True, exist_ok=True)
        build_world(w)
        (w / "rec.yaml").write_text(REC_CFG)
        sys.path.insert(0, str(ROOT / "tests"))
        from test_bad_input import minimal_report  # a small valid report.json, built by hand

        (w / "valid.json").write_text(json.dumps(minimal_report()))
    base.mkdir(parents=True)
    cap = int(args.cap_gb * 1e9)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda p: run_one(p, w, base, cap, args.timeout), probes))
    width = max(len(r["id"]) for r in rows)
    for r in rows:
        print(f"{r['id']:<{width}}  {r['expect']:<6}  {str(r['rc']):>7}  {r.get('s', 0):>5}s  {r.get('mb', 0):>5}MB  "
              f"{r['verdict']:<40}  "
              f"{r['line']}")
    broken = [r for r in rows if r["verdict"] != "ok"]
    print(f"\n{len(rows)} probes, {len(broken)} broken")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
