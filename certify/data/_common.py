"""What every dataset source shares: the `Dataset` type, the registry, validation, the seeded split."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from certify.errors import UserError
from certify.registry import Registry
from certify.seeding import derive, stratified_draw

# Named sources register themselves here (one module each); `folder:` and `npz:` are spec forms.
DATASETS = Registry("dataset", package="certify.data")
DEFAULT_DATASET = "cifar10-mini"
SPEC_FORMS = {
    "folder:PATH": "an image folder: one subfolder of PNG, JPEG, WebP, BMP, GIF or TIFF images per class "
                   "(sorted names = label order), one size or --image-size; split 80/20 stratified by seed",
    "npz:PATH": "arrays x (uint8 N×H×W×C or N×H×W, or float32 in [0, 1]) and y (int labels 0..K-1); "
                "split 80/20 stratified by seed",
    "idx:DIR": "a folder with one pair of IDX files, *-images-idx3-ubyte[.gz] and *-labels-idx1-ubyte[.gz] "
               "(the MNIST release format); split 80/20 stratified by seed",
    "pt:PATH": "a torch.save file: a dict with x (uint8, or float in [0, 1]; N×C×H×W or N×H×W×C) and y "
               "(int labels), optionally classes; a tensor of images alone is a release for certify audit",
    "delta:PATH": "certify audit --release only: a perturbation in [-1, 1] (.pt, .npy or .npz, shaped like "
                  "the clean images) added to --clean, clipped and rounded to 8 bits",
}
SPLITS = ("train", "test")
TEST_FRACTION = 0.2
# What a dataset file may make us allocate: sizes read from a file are checked against these (and
# against what the file holds) before they size anything.
MAX_BYTES = 4 * 2**30  # uncompressed bytes of one array: an npz member, an IDX payload, a folder's pixels
MAX_SIDE = 4096  # pixels per image side (16.7 M pixels, below Pillow's decompression-bomb limit)


@dataclass
class Dataset:
    """Clean train/test tensors: x float32 N×C×H×W in [0, 1] on the 1/255 grid, y int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str] = field(default_factory=list)
    resized_to: int | None = None  # --image-size: every image resized to this square

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def info(self) -> dict:
        """The report's `dataset` section."""
        info = {"name": self.name, "n_train": int(len(self.y_train)), "n_test": int(len(self.y_test)),
                "shape": list(self.shape), "classes": self.num_classes}
        return info if self.resized_to is None else {**info, "resized_to": self.resized_to}


@dataclass
class Source:
    """What a loader returns: either both splits (`test` set) or one set to split by seed (`test` None)."""

    classes: list[str]
    x: torch.Tensor  # the train split, or the whole set when test is None
    y: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None

    @property
    def has_split(self) -> bool:
        return self.x_test is not None


@dataclass(frozen=True)
class ByteLimit:
    """A smaller limit than `MAX_BYTES` on one array, where the caller knows how large it must be."""
    nbytes: int
    why: str  # said after the limit: " (...)"


def check_bytes(nbytes: int, where: str, limit: ByteLimit | None = None) -> None:
    """`nbytes` at most `limit`, or at most `MAX_BYTES` (read when called: tests lower it) without one."""
    cap, why = (MAX_BYTES, "") if limit is None else (limit.nbytes, limit.why)
    if nbytes > cap:
        raise UserError(f"{where}: {nbytes:,} bytes uncompressed, over the limit of {cap:,} bytes{why}")


def check_side(h: int, w: int, where: str) -> None:
    if max(h, w) > MAX_SIDE:
        raise UserError(f"{where}: images {h} pixels high and {w} wide, over the limit of {MAX_SIDE} pixels per side")


def check_class_count(k: int, n: int, where: str) -> None:
    """K classes need K images (none may be empty): checked before anything is sized by K."""
    if k > n:
        raise UserError(f"{where}: {k:,} classes (labels 0..{k - 1:,}) but only {n:,} images; "
                        f"every class needs at least one image")


def labels_and_classes(y: np.ndarray, n: int, names: list[str] | None, where: str) -> tuple[np.ndarray, list[str]]:
    """int64 labels (one per image, 0..K-1, every class present) and K class names: `names`, or
    "0".."K-1" with K the largest label + 1; K is checked against the images before it sizes anything."""
    if y.dtype.kind not in "iu":
        raise UserError(f"{where}: y has dtype {y.dtype}; labels must be integers")
    if y.ndim != 1:
        raise UserError(f"{where}: y has shape {tuple(y.shape)}; expected one label per image (N,)")
    if len(y) != n:
        raise UserError(f"{where}: x holds {n} images but y holds {len(y)} labels")
    y = y.astype(np.int64)
    if int(y.min()) < 0:
        raise UserError(f"{where}: negative label {int(y.min())} (labels must be 0..K-1)")
    if names is not None:
        if int(y.max()) >= len(names):
            raise UserError(f"{where}: label {int(y.max())} out of range for {len(names)} classes")
        check_class_count(len(names), len(y), where)
        classes = list(names)
    else:
        check_class_count(int(y.max()) + 1, len(y), where)
        classes = [str(i) for i in range(int(y.max()) + 1)]
    if len(classes) < 2:
        raise UserError(f"{where}: at least 2 classes are needed (found {len(classes)})")
    counts = np.bincount(y, minlength=len(classes))
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise UserError(f"{where}: class {c} has no images (labels must cover 0..{len(classes) - 1})")
    return y, classes


def uint8_to_tensor(a: np.ndarray, channels_last: bool = True) -> torch.Tensor:
    """uint8 N×H×W×C (or N×C×H×W with channels_last=False) -> float32 N×C×H×W on the 1/255 grid."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    if not a.flags.writeable:  # e.g. a cached array: torch wants writable memory (the result is a new tensor)
        a = a.copy()
    t = torch.from_numpy(a)
    if channels_last:
        t = t.permute(0, 3, 1, 2)
    return t.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)  # one float32 copy, not two


def to_grid(x: torch.Tensor) -> torch.Tensor:
    """Round float images in [0, 1] onto the 1/255 grid (what 8-bit storage keeps)."""
    return torch.round(x.to(torch.float32) * 255.0) / 255.0


def pixels_to_grid(t: torch.Tensor, what: str) -> torch.Tensor:
    """N×C×H×W pixels, uint8 (0..255) or float in [0, 1], -> float32 on the 1/255 grid (float values
    rounded as 8-bit storage would). `what` names the array in messages ("PATH: x")."""
    if t.dtype == torch.uint8:
        return t.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)  # one float32 copy, not two
    if not t.is_floating_point():
        raise UserError(f"{what} has dtype {str(t.dtype).removeprefix('torch.')}; expected uint8 (0..255) "
                        f"or float in [0, 1]")
    if not bool(torch.isfinite(t).all()):
        raise UserError(f"{what} contains NaN or Inf")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0.0 or hi > 1.0:
        raise UserError(f"{what} values must lie in [0, 1] for float images (found {lo:g} .. {hi:g})")
    return to_grid(t.contiguous())


def labels_tensor(y) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y), dtype=torch.int64).reshape(-1)


def _check_images(x: torch.Tensor, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() != 4:
        raise UserError(f"{where}: images must be a float32 N×C×H×W tensor "
                        f"(got {getattr(x, 'dtype', type(x).__name__)} with shape {tuple(getattr(x, 'shape', ()))})")
    if min(x.shape[1:]) < 1:
        raise UserError(f"{where}: empty image shape {tuple(x.shape[1:])}")
    if not bool(torch.isfinite(x).all()):
        raise UserError(f"{where}: images contain NaN or Inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise UserError(f"{where}: pixel values must lie in [0, 1] (found {lo:g} .. {hi:g})")


def validate(x, y: torch.Tensor, where: str, num_classes: int | None = None) -> None:
    """Check one set: float32 N×C×H×W in [0, 1] without NaN/Inf (or a list of C×H×W images of several
    sizes, as a folder's are read for an audit), int64 labels in range, no empty class."""
    if not isinstance(x, (torch.Tensor, list)):
        _check_images(x, where)  # says what was expected
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        raise UserError(f"{where}: labels must be a 1-D int64 tensor")
    if len(x) != len(y):
        raise UserError(f"{where}: {len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise UserError(f"{where}: no images")
    for images in ([im.unsqueeze(0) for im in x] if isinstance(x, list) else [x]):
        _check_images(images, where)
    if int(y.min()) < 0:
        raise UserError(f"{where}: negative label {int(y.min())}")
    k = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if k < 2:
        raise UserError(f"{where}: at least 2 classes are needed (found {k})")
    if int(y.max()) >= k:
        raise UserError(f"{where}: label {int(y.max())} out of range for {k} classes")
    check_class_count(k, len(y), where)
    counts = torch.bincount(y, minlength=k)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise UserError(f"{where}: class {empty[0]} has no images (every class 0..{k - 1} needs at least one)")


def stratified_split(x: torch.Tensor, y: torch.Tensor, seed: int, where: str):
    """A fixed, seeded, stratified 80/20 train/test split; both parts keep the source order."""
    counts = torch.bincount(y)
    if int(counts.min()) < 2 or len(y) < 2 * len(counts):
        raise UserError(f"{where}: a stratified 80/20 split needs at least 2 images per class "
                        f"(class {int(counts.argmin())} has {int(counts.min())}); give a separate test set with --test")
    n_test = max(int(round(TEST_FRACTION * len(y))), len(counts))
    te, tr = stratified_draw(y, n_test, derive(seed, "split"), where)
    return x[tr], y[tr], x[te], y[te]
