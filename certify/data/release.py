"""The released set of `certify audit --release SRC`, paired image for image with the clean set.

SRC is any source `load_split` reads, `pt:PATH` with images alone (they take the clean set's
labels), or `delta:PATH`, a perturbation added to the clean images (`delta`). Images are read as
given (no resizing; a folder's may differ in size), so the perturbation can be measured before
`--image-size` changes it.

Pairing: a `folder:` release is put into the clean set's order by file path (class folder / file
name, extension aside) where the clean set is a folder of the same files, else by the index its
file names carry where they are exactly 0..N-1 (`certify poison` names each exported image by its
index in the set it was crafted on); otherwise, and for every other source, by order. Count and
labels are checked after pairing, and a mismatch says how a folder release pairs.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import torch

from certify.data import load_split, parse_spec
from certify.data.delta import perturb, read_perturbation
from certify.data.folder import image_paths
from certify.data.pt import read_pt_images
from certify.errors import UserError

MAX_MANIFEST = 1 << 20  # bytes of an export's manifest.json read for a hint
BY_ORDER, BY_PATH, BY_INDEX = "by order", "by file path", "by the index in each file name"


def _shape_of(x_clean, where: str) -> tuple[int, int, int, int]:
    if not isinstance(x_clean, torch.Tensor):
        raise UserError(f"{where}: a perturbation file needs clean images of one size (the clean set's differ)")
    return tuple(int(s) for s in x_clean.shape)


def _key(p: Path) -> tuple[str, str]:
    return p.parent.as_posix(), p.stem  # a PNG release of JPEG originals keeps the originals' names


def _clean_paths(clean_spec: str | None) -> list[Path] | None:
    if clean_spec is None or parse_spec(clean_spec)[0] != "folder":
        return None
    return image_paths(parse_spec(clean_spec)[1], f"dataset {clean_spec!r}")


def folder_order(root: str, clean_spec: str | None, n_clean: int, where: str,
                 seed: int = 0) -> tuple[list[int] | None, str]:
    """(the release's positions in the clean set's order, or None to keep its own; how it pairs).
    Raises UserError where a folder clean set shares some of the release's paths but not all."""
    rel = image_paths(root, where)
    clean = _clean_paths(clean_spec)
    pos = {_key(p): i for i, p in enumerate(rel)}
    if clean is not None and len(pos) == len(rel):
        clean_keys = {_key(p) for p in clean}
        alone = [p.as_posix() for p in rel if _key(p) not in clean_keys]
        missing = [p.as_posix() for p in clean if _key(p) not in pos]
        if not alone and not missing:
            return [pos[_key(p)] for p in clean], BY_PATH
        if len(alone) < len(rel):  # some paths pair: pairing the rest by order or index would be a guess
            raise UserError(f"{where}: release and clean files pair by path only in part ({len(alone)} release "
                            f"files without a clean file of the same path{_e_g(alone)}; {len(missing)} clean "
                            f"files without a release file{_e_g(missing)}){pairing_hint(root, clean_spec, seed)}")
    stems = [p.stem for p in rel]
    if all(s.isascii() and s.isdigit() for s in stems) and sorted(map(int, stems)) == list(range(n_clean)):
        index = {int(s): i for i, s in enumerate(stems)}
        return [index[i] for i in range(n_clean)], BY_INDEX
    return None, BY_ORDER


def _e_g(paths: list[str]) -> str:
    return f", e.g. {paths[0]}" if paths else ""


def _take(x, order: list[int]):
    return x[torch.as_tensor(order)] if isinstance(x, torch.Tensor) else [x[i] for i in order]


def _manifest(root: str) -> dict:
    path = Path(root).expanduser() / "manifest.json"
    try:
        if path.stat().st_size > MAX_MANIFEST:  # only a hint reads it: a large one is not worth reading
            return {}
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def export_command(root: str, clean_spec: str | None, seed: int) -> str | None:
    """The `certify poison` command that exports the clean set a folder release pairs with, where it
    is known: from the release's manifest (its dataset, seed and size), or a `NAME:train` clean set."""
    m = _manifest(root)
    if isinstance(m.get("dataset"), str) and isinstance(m.get("seed"), int):
        dataset, seed, size = m["dataset"], m["seed"], m.get("resized_to")
    elif clean_spec is not None and parse_spec(clean_spec)[0::2] == ("name", "train"):
        dataset, size = parse_spec(clean_spec)[1], None
    else:
        return None
    return (f"certify poison --poison none --dataset {shlex.quote(dataset)} --seed {seed} --format png --out CLEAN"
            + (f" --image-size {size}" if size else ""))


def pairing_hint(root: str, clean_spec: str | None, seed: int) -> str:
    """How to pair a folder release that did not: export the clean set the same way, or use delta:."""
    cmd = export_command(root, clean_spec, seed)
    export = (f"export the clean set the same way ({cmd}) and give --clean folder:CLEAN" if cmd else
              "export the clean set the release was made from the same way (certify poison --poison none "
              "--format png) and give it as --clean folder:CLEAN")
    return (f"; a folder release pairs by file path (class folder / file name) with a "
            f"folder clean set, or by the index in each file name (0..N-1, as certify poison names them); "
            f"{export}, or give the release as delta:PATH (its perturbation, in the clean set's order)")


def load_release(spec: str, x_clean, y_clean: torch.Tensor, data_root=None, download: bool = False,
                 seed: int = 0, clean_spec: str | None = None):
    """(released images as given, labels), paired with the clean set (`clean_spec`, when it is a
    folder, pairs by path): a tensor, or a list where a folder's sizes differ. Raises UserError when
    count or labels do not pair."""
    where = f"release {spec!r}"
    kind, path, _ = parse_spec(spec)
    if kind == "delta":
        return perturb(x_clean, read_perturbation(path, _shape_of(x_clean, where), where)), y_clean
    how = BY_ORDER
    if kind == "pt":
        like = _shape_of(x_clean, where) if isinstance(x_clean, torch.Tensor) else None
        x, y, _ = read_pt_images(path, where, like)
        y = y_clean if y is None else torch.from_numpy(y)
    else:
        x, y, _ = load_split(spec, data_root, download, seed, mixed_ok=True)
        if kind == "folder":
            order, how = folder_order(path, clean_spec, len(y_clean), where, seed)
            if order is not None:
                x, y = _take(x, order), y[torch.as_tensor(order)]
    if len(x) == len(x_clean) and torch.equal(y, y_clean):
        return x, y
    hint = pairing_hint(path, clean_spec, seed) if kind == "folder" else ""
    if len(x) != len(x_clean):
        clean = f"clean {clean_spec!r}" if clean_spec else "the clean set"
        raise UserError(f"{where} has {len(x)} images but {clean} has {len(x_clean)}{hint}")
    bad = int((y != y_clean).nonzero()[0, 0])
    raise UserError(f"release and clean labels differ (first at image {bad}, paired {how}): they must pair image "
                    f"for image{hint}")
