"""Which victim recipe fits its training data? Train candidate (model, recipe) pairs on a dataset and
record clean training accuracy (the whole un-augmented training split), test accuracy and seconds.

    python bench/victim_fit.py                       # every candidate on cifar10-mini, 1 thread each
    python bench/victim_fit.py --jobs 12 --only cnn32-e30-noflip,cnn-e15-flip
    python bench/victim_fit.py --device cuda --out /tmp/fit-gpu.json   # accuracies only, fast

A victim that cannot fit clean data (the former default, cnn width 8, reached ~0.59 training
accuracy) makes shortcut poisons look weak for the wrong reason. Each candidate is one process
with `--threads` torch threads (`--jobs` run side by side), so `seconds` is one training at that
many threads on this machine; the JSON is rewritten after every candidate (partial runs keep
what finished). Seeds: derive(seed, "victim"), as the pipeline's victim.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from pathlib import Path

import torch

from certify.data import load_dataset
from certify.models import MODELS, SmallCNN, build_model
from certify.seeding import derive
from certify.training import TrainConfig, evaluate, train

# name -> (model: a registered architecture, or `cnnW`, the small CNN at width W; TrainConfig fields); unset:
# batch 128, lr 0.05, cosine, momentum 0.9, weight decay 5e-4, flip. The first block was measured first;
# batch size was the lever, so the second block varies it, with weight decay and the MLP.
CANDIDATES: dict[str, tuple[str, dict]] = {
    "cnn-e15-flip": ("cnn", {"epochs": 15, "flip": True}),  # the former cifar10-mini default
    "cnn-e40-noflip": ("cnn", {"epochs": 40, "flip": False}),
    "cnn16-e15-noflip": ("cnn16", {"epochs": 15, "flip": False}),
    "cnn16-e30-flip": ("cnn16", {"epochs": 30, "flip": True}),
    "cnn16-e30-noflip": ("cnn16", {"epochs": 30, "flip": False}),
    "cnn16-e60-noflip": ("cnn16", {"epochs": 60, "flip": False}),
    "cnn16-e30-noflip-b64": ("cnn16", {"epochs": 30, "flip": False, "batch_size": 64}),
    "cnn32-e15-noflip": ("cnn32", {"epochs": 15, "flip": False}),
    "cnn32-e20-noflip": ("cnn32", {"epochs": 20, "flip": False}),
    "cnn32-e30-noflip": ("cnn32", {"epochs": 30, "flip": False}),
    "cnn32-e30-flip": ("cnn32", {"epochs": 30, "flip": True}),
    "cnn32-e15-noflip-lr0.1": ("cnn32", {"epochs": 15, "flip": False, "lr": 0.1}),
    "cnn64-e10-noflip": ("cnn64", {"epochs": 10, "flip": False}),
    "mlp-e15-noflip": ("mlp", {"epochs": 15, "flip": False}),
    "mlp-e15-noflip-wd0": ("mlp", {"epochs": 15, "flip": False, "weight_decay": 0.0}),
    "mlp-e30-noflip": ("mlp", {"epochs": 30, "flip": False}),
    "mlp-e30-flip": ("mlp", {"epochs": 30, "flip": True}),
    "cnn-e60-noflip-wd0": ("cnn", {"epochs": 60, "flip": False, "weight_decay": 0.0}),
    "cnn16-e60-noflip-wd0": ("cnn16", {"epochs": 60, "flip": False, "weight_decay": 0.0}),
    "cnn16-e60-noflip-b64-wd0": ("cnn16", {"epochs": 60, "flip": False, "batch_size": 64, "weight_decay": 0.0}),
    "cnn16-e60-noflip-b32": ("cnn16", {"epochs": 60, "flip": False, "batch_size": 32}),
    "cnn16-e45-noflip-b64-wd0-lr0.1": ("cnn16", {"epochs": 45, "flip": False, "batch_size": 64, "weight_decay": 0.0,
                                                "lr": 0.1}),
    "cnn32-e30-noflip-wd0": ("cnn32", {"epochs": 30, "flip": False, "weight_decay": 0.0}),
    "cnn32-e30-noflip-b64-wd0": ("cnn32", {"epochs": 30, "flip": False, "batch_size": 64, "weight_decay": 0.0}),
    # next (not measured yet): the smallest batch measured was the best lever
    "cnn16-e60-noflip-b32-wd0": ("cnn16", {"epochs": 60, "flip": False, "batch_size": 32, "weight_decay": 0.0}),
    "cnn16-e60-noflip-b16": ("cnn16", {"epochs": 60, "flip": False, "batch_size": 16}),
    # the victim panel (issue 26), with the run's flip (cifar10-mini's default): a recipe sets no flip
    "resnet20-e15-b64": ("resnet20", {"epochs": 15, "batch_size": 64}),
    "vgg-small-e15-b64": ("vgg-small", {"epochs": 15, "batch_size": 64}),
    "vit-tiny-e30-b64": ("vit-tiny", {"epochs": 30, "batch_size": 64}),
    # 15 epochs at batch 64 fit 0.85 (resnet20) and 0.80 (vgg-small): more steps, as for cnn16
    "resnet20-e20-b32": ("resnet20", {"epochs": 20, "batch_size": 32}),
    "vgg-small-e20-b32": ("vgg-small", {"epochs": 20, "batch_size": 32}),
    "vit-tiny-e30-b32": ("vit-tiny", {"epochs": 30, "batch_size": 32}),  # 30 at batch 64 fit 0.56
    "vgg-small-e30-b32": ("vgg-small", {"epochs": 30, "batch_size": 32}),  # 20 fit 0.91
}

# Seconds per epoch at one thread, measured: only to start the longest candidates first.
EPOCH_SECONDS = {"mlp": 0.6, "cnn": 2, "cnn16": 3.5, "cnn32": 9, "cnn64": 28, "resnet20": 19, "vgg-small": 19,
                 "vit-tiny": 9}


def make_model(name: str, shape: tuple[int, int, int], num_classes: int, seed: int) -> torch.nn.Module:
    """A registered architecture, or `cnnW`: the small CNN at a width no architecture registers."""
    if name in MODELS.names():
        return build_model(name, shape, num_classes, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN(shape[0], num_classes, int(name.removeprefix("cnn")))


def run_candidate(job: tuple) -> dict:
    name, dataset, seed, threads, device = job
    torch.set_num_threads(threads)
    arch, fields = CANDIDATES[name]
    data = load_dataset(dataset)
    cfg = TrainConfig(**fields)
    s = derive(seed, "victim")
    model = make_model(arch, data.shape, data.num_classes, s).to(device)
    t0 = time.perf_counter()
    hist = train(model, data.x_train, data.y_train, cfg, s, desc=name)
    seconds = time.perf_counter() - t0
    return {"name": name, "model": arch, "parameters": sum(p.numel() for p in model.parameters()),
            "train": {**vars(TrainConfig()), **fields}, "seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / cfg.epochs, 2),
            "train_accuracy": evaluate(model, data.x_train, data.y_train, cfg.eval_batch),
            "test_accuracy": evaluate(model, data.x_test, data.y_test, cfg.eval_batch),
            "train_loss_last_epoch": round(hist["train_loss"][-1], 4)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cifar10-mini")
    ap.add_argument("--only", help="comma-separated candidate names (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training")
    ap.add_argument("--jobs", type=int, default=1, help="trainings side by side")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="reports/bench-victim-fit.json", help="runs are appended")
    ap.add_argument("--machine", default=platform.node(), help="where it ran, for the record")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidates: {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")
    # longest first, so the pool ends sooner
    order = sorted(names, key=lambda n: -EPOCH_SECONDS[CANDIDATES[n][0]] * CANDIDATES[n][1]["epochs"])
    jobs = [(n, args.dataset, args.seed, args.threads, args.device) for n in order]
    meta = {"machine": args.machine, "dataset": args.dataset, "seed": args.seed, "threads": args.threads, "jobs": args.jobs,
            "device": args.device, "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__}
    rows: list[dict] = []
    out = Path(args.out)
    # each invocation is one run (its machine and parallelism); earlier runs in the file are kept
    runs = json.loads(out.read_text())["runs"] if out.exists() else []
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        for row in pool.imap_unordered(run_candidate, jobs):
            rows.append(row)
            print(f"{row['name']}: train {row['train_accuracy']:.3f}, test {row['test_accuracy']:.3f}, "
                  f"{row['seconds']:.0f} s", flush=True)
            rows.sort(key=lambda r: names.index(r["name"]))
            out.write_text(json.dumps({"runs": runs + [{**meta, "candidates": rows}]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
