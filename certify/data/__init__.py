"""The dataset layer: every source becomes clean float32 N×C×H×W tensors in [0, 1] on the 1/255 grid.

A dataset spec is a registered name (`DATASETS`: cifar10-mini, digits, mnist, cifar10, cifar100,
svhn), `folder:PATH`, `npz:PATH`, `idx:DIR` or `pt:PATH` (`SPEC_FORMS`; `delta:PATH` is parsed here
but is a release only, `release.py`). A registered name may carry a split, `cifar10-mini:train` /
`cifar10-mini:test`, where a single set is wanted (`load_split`, `--test`).
Sources without their own split (digits, folders, npz and IDX files) get a fixed, seeded, stratified 80/20
train/test split, derived from `seeding.derive(seed, "split")`. With `image_size` S (`--image-size`)
every image is resized to S×S (`resize`).
"""
from __future__ import annotations

import torch

from certify.data._common import (DATASETS, DEFAULT_DATASET, SPEC_FORMS, SPLITS, Dataset, Source,
                                  stratified_split, validate)
from certify.data.resize import resize_images
from certify.errors import UserError

FORMS = ("folder", "npz", "idx", "pt", "delta")

__all__ = ["DATASETS", "DEFAULT_DATASET", "SPEC_FORMS", "Dataset", "load_dataset", "load_split",
           "parse_spec", "validate"]


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """(a form of `FORMS` or 'name', path-or-name, split or None). Raises UserError for anything else."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"dataset spec must be a name, folder:PATH, npz:PATH, idx:DIR or pt:PATH (got {spec!r})")
    spec = spec.strip()
    for form in FORMS:
        if spec.startswith(form + ":"):
            path = spec[len(form) + 1:]
            if not path:
                raise UserError(f"dataset {spec!r}: missing path after '{form}:'")
            return form, path, None
    name, sep, split = spec.partition(":")
    if name not in DATASETS.names():
        raise UserError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS.names())}, "
                        f"or folder:PATH, npz:PATH, idx:DIR, pt:PATH")
    if sep and split not in SPLITS:
        raise UserError(f"dataset {spec!r}: unknown split {split!r}; use {name}:train or {name}:test")
    return "name", name, (split if sep else None)


def _read_source(kind: str, arg: str, data_root, download: bool, where: str, image_size: int | None,
                 mixed_ok: bool) -> Source:
    """The loader of `kind`; a filesystem error on the way (a name too long, a loop of links) is one line."""
    if kind == "delta":
        raise UserError(f"{where}: delta:PATH is a perturbation of the clean set, for certify audit --release only")
    try:
        if kind == "folder":
            from certify.data.folder import load_folder

            return load_folder(arg, where, image_size, mixed_ok)
        if kind == "npz":
            from certify.data.npz import load_npz

            return load_npz(arg, where)
        if kind == "idx":
            from certify.data.idx import load_idx

            return load_idx(arg, where)
        if kind == "pt":
            from certify.data.pt import load_pt

            return load_pt(arg, where)
        return DATASETS.get(arg).factory(data_root=data_root, download=download)
    except OSError as e:
        raise UserError(f"{where}: cannot be read ({e.strerror or type(e).__name__})") from None


def _load_source(kind: str, arg: str, data_root, download: bool, where: str, image_size: int | None = None,
                 mixed_ok: bool = False) -> Source:
    """The source, validated; resized to image_size×image_size if given (a folder as it is read)."""
    src = _read_source(kind, arg, data_root, download, where, image_size, mixed_ok)
    if image_size is not None:
        src.x = resize_images(src.x, image_size, where)
        if src.has_split:
            src.x_test = resize_images(src.x_test, image_size, where + " (test split)")
    k = len(src.classes)
    validate(src.x, src.y, where + (" (train split)" if src.has_split else ""), k)
    if src.has_split:
        validate(src.x_test, src.y_test, where + " (test split)", k)
        if src.x_test.shape[1:] != src.x.shape[1:]:
            raise UserError(f"{where}: test images {tuple(src.x_test.shape[1:])} differ from train "
                            f"{tuple(src.x.shape[1:])}")
    return src


def _load_set(spec: str, data_root, download: bool, seed: int, where: str, default_split: str | None,
              image_size: int | None = None, mixed_ok: bool = False):
    kind, arg, split = parse_spec(spec)
    split = split or (default_split if kind == "name" else None)
    src = _load_source(kind, arg, data_root, download, where, image_size, mixed_ok)
    if split is None:
        if src.has_split:
            raise UserError(f"{where}: {arg} has its own train and test splits; name one: "
                            f"{arg}:train or {arg}:test")
        return src.x, src.y, list(src.classes)
    if src.has_split:
        x, y = (src.x, src.y) if split == "train" else (src.x_test, src.y_test)
    else:
        xtr, ytr, xte, yte = stratified_split(src.x, src.y, seed, where)
        x, y = (xtr, ytr) if split == "train" else (xte, yte)
    return x, y, list(src.classes)


def load_split(spec: str, data_root=None, download: bool = False, seed: int = 0, image_size: int | None = None,
               mixed_ok: bool = False):
    """One set (x, y, classes), e.g. `cifar10-mini:train`, `folder:PATH`, `npz:PATH` (for `certify audit`).

    A registered name with `:train`/`:test` picks that split (for sources without their own split,
    that part of the seeded 80/20 split); `folder:`, `npz:` and `pt:` sources, and registered sources
    without a split named bare, are used whole. With `image_size` every image is resized to that
    square; with `mixed_ok` (and no size) a folder whose images differ in size gives a list of them.
    """
    return _load_set(spec, data_root, download, seed, f"dataset {spec!r}", None, image_size, mixed_ok)


def load_dataset(spec: str = DEFAULT_DATASET, data_root=None, download: bool = False, seed: int = 0,
                 test: str | None = None, image_size: int | None = None) -> Dataset:
    """Clean train and test sets of `spec`; `test` (a spec) replaces the test split; with `image_size`
    S, every image of both resized to S×S.

    With `test`, the whole of a source without its own split is the training set (except when `test`
    is that source's own `:test` part, e.g. `digits` with `digits:test`: then its seeded train part). The test source
    must have the same image shape and number of classes as the training source.
    """
    kind, arg, split = parse_spec(spec)
    if split is not None:
        raise UserError(f"dataset {spec!r}: give the source without a split ({arg}); "
                        f"a separate test set goes in --test")
    where = f"dataset {spec!r}"
    src = _load_source(kind, arg, data_root, download, where, image_size)
    classes = list(src.classes)
    if test is None:
        if src.has_split:
            xtr, ytr, xte, yte = src.x, src.y, src.x_test, src.y_test
        else:
            xtr, ytr, xte, yte = stratified_split(src.x, src.y, seed, where)
    else:
        xtr, ytr = src.x, src.y
        if not src.has_split and kind == "name" and parse_spec(test)[1:] == (arg, "test"):
            # `--dataset digits --test digits:test`: the seeded split's own halves, no overlap
            xtr, ytr, _, _ = stratified_split(src.x, src.y, seed, where)
        xte, yte, test_classes = _load_set(test, data_root, download, seed, f"test set {test!r}", "test", image_size)
        if tuple(xte.shape[1:]) != tuple(xtr.shape[1:]):
            raise UserError(f"test set {test!r}: images are {'x'.join(map(str, xte.shape[1:]))} (C×H×W) but "
                            f"dataset {spec!r} has {'x'.join(map(str, xtr.shape[1:]))}")
        if len(test_classes) != len(classes):
            raise UserError(f"test set {test!r}: {len(test_classes)} classes but dataset {spec!r} has {len(classes)}")
        if set(test_classes) == set(classes) and test_classes != classes:
            raise UserError(f"test set {test!r}: same class names as dataset {spec!r} in a different label order")
    return Dataset(spec.strip(), xtr.contiguous(), ytr.to(torch.int64), xte.contiguous(), yte.to(torch.int64), classes,
                   image_size)
