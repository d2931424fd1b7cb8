"""`mnist`, `cifar10`, `cifar100`, `svhn`: the full datasets through torchvision, from --data-root.

Nothing is fetched unless `download=True` (`--download`). Without --data-root the files live under
`$XDG_CACHE_HOME/certify/datasets` (else `~/.cache/certify/datasets`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from certify.data._common import DATASETS, Source, labels_tensor, uint8_to_tensor
from certify.errors import UserError


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "certify" / "datasets"


def _open(name: str, make, data_root, download: bool):
    """Run make(root, train: bool, download) for both splits, turning failures into one line."""
    root = Path(data_root).expanduser() if data_root else default_root()
    if download:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--data-root {root}: cannot create the folder ({e.strerror})") from None
    elif not root.is_dir():
        raise UserError(f"dataset {name!r}: data root {root} does not exist; pass --download to fetch it "
                        f"or --data-root DIR pointing at a copy")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        raise UserError(f"dataset {name!r} needs torchvision (pip install torchvision)") from None
    out = []
    for train in (True, False):
        try:
            out.append(make(str(root), train, download))
        except RuntimeError as e:
            if not download:
                raise UserError(f"dataset {name!r} not found under {root}; pass --download to fetch it "
                                f"or --data-root DIR pointing at a copy") from None
            raise UserError(f"dataset {name!r}: download into {root} failed ({str(e).splitlines()[0]})") from None
        # network errors, truncated or corrupted files: torchvision's readers raise anything on a
        # damaged file (the MNIST one asserts on its header)
        except Exception as e:
            what = "download into" if download else "reading"
            raise UserError(f"dataset {name!r}: {what} {root} failed ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return out


def _mnist(root, train, download):
    from torchvision.datasets import MNIST

    return MNIST(root, train=train, download=download)


def _cifar10(root, train, download):
    from torchvision.datasets import CIFAR10

    return CIFAR10(root, train=train, download=download)


def _cifar100(root, train, download):
    from torchvision.datasets import CIFAR100

    return CIFAR100(root, train=train, download=download)


def _svhn(root, train, download):
    from torchvision.datasets import SVHN

    return SVHN(root, split="train" if train else "test", download=download)


@DATASETS.register("mnist", "MNIST via torchvision (needs --download or --data-root): 60,000 / 10,000, "
                   "28x28, 1 channel, 10 classes", kind="dataset")
def load_mnist(data_root=None, download=False) -> Source:
    tr, te = _open("mnist", _mnist, data_root, download)
    def x(d):
        return uint8_to_tensor(np.asarray(d.data, dtype=np.uint8)[..., None])
    return Source(list(tr.classes), x(tr), labels_tensor(tr.targets), x(te), labels_tensor(te.targets))


def _cifar(name, make, data_root, download) -> Source:
    tr, te = _open(name, make, data_root, download)
    return Source(list(tr.classes), uint8_to_tensor(tr.data), labels_tensor(tr.targets),
                  uint8_to_tensor(te.data), labels_tensor(te.targets))


@DATASETS.register("cifar10", "CIFAR-10 via torchvision (needs --download or --data-root): 50,000 / 10,000, "
                   "32x32 RGB, 10 classes", kind="dataset")
def load_cifar10(data_root=None, download=False) -> Source:
    return _cifar("cifar10", _cifar10, data_root, download)


@DATASETS.register("cifar100", "CIFAR-100 via torchvision (needs --download or --data-root): 50,000 / 10,000, "
                   "32x32 RGB, 100 classes", kind="dataset")
def load_cifar100(data_root=None, download=False) -> Source:
    return _cifar("cifar100", _cifar100, data_root, download)


@DATASETS.register("svhn", "SVHN via torchvision (needs --download or --data-root): 73,257 / 26,032, "
                   "32x32 RGB, 10 classes", kind="dataset")
def load_svhn(data_root=None, download=False) -> Source:
    tr, te = _open("svhn", _svhn, data_root, download)
    classes = [str(i) for i in range(10)]
    return Source(classes, uint8_to_tensor(tr.data, channels_last=False), labels_tensor(tr.labels),
                  uint8_to_tensor(te.data, channels_last=False), labels_tensor(te.labels))
