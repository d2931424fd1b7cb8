"""Defense cost per epoch relative to plain training, and the pgd recovery runtime.

    python bench/defenses_check.py [--n 5000] [--epochs 15] [--at-steps 2,10] [--reps 1] [--skip-recovery] [--json F]

On cifar10-mini with the default model (`cnn`) and training (TrainConfig(epochs=15, batch_size=128,
lr=0.05, flip=True)): one timed epoch per defense (after one untimed warm-up epoch of plain
training; with --reps the fastest of several, as other load on the machine only adds time),
the one-off `prepare` time separately, AT at each `--at-steps`; then a clean model
trained for `--epochs` and the pgd recovery (quick profile, bn frozen, ball) at 3 eta values on a
20 % attacker split. CPU only, 2 threads. Epoch and prepare times are process CPU seconds (both threads summed), which
other load on a shared machine barely moves, unlike wall-clock time; recovery times are wall-clock. Prints a table (and writes --json FILE if given).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from attacks.recovery import RECOVERY, RecoveryInputs, attacker_split
from certify.data import load_dataset
from certify.models import build_model
from certify.training import TrainConfig, train
from defenses.base import DEFENSES


def timed_epoch(x, y, shape, k, cfg, defense=None):
    model = build_model("cnn", shape, k, seed=0)
    t0 = time.process_time()
    if defense is not None and defense.prepare is not None:
        x, y = defense.prepare(x, y, 0)
    t1 = time.process_time()
    train(model, x, y, cfg, seed=0, batch_transform=defense and defense.batch_transform,
          loss_fn=defense and defense.loss_fn, desc="bench")
    return t1 - t0, time.process_time() - t1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000, help="training images used for the timing")
    ap.add_argument("--epochs", type=int, default=15, help="epochs of the clean model for recovery")
    ap.add_argument("--at-steps", default="2,10")
    ap.add_argument("--etas", default="0.5,1,2")
    ap.add_argument("--reps", type=int, default=1, help="timed epochs per setting; the minimum is kept")
    ap.add_argument("--skip-recovery", action="store_true")
    ap.add_argument("--json", help="also write the measurements to this file")
    a = ap.parse_args()
    torch.set_num_threads(2)
    d = load_dataset("cifar10-mini", seed=0)
    x, y = d.x_train[:a.n], d.y_train[:a.n]
    shape, k = tuple(x.shape[1:]), len(d.classes)
    one = TrainConfig(epochs=1, batch_size=128, lr=0.05, flip=True)
    out = {"n": len(x), "defenses": {}}
    timed_epoch(x, y, shape, k, one)  # warm-up
    plain = min(timed_epoch(x, y, shape, k, one)[1] for _ in range(a.reps))
    out["plain_epoch_s"] = plain
    print(f"plain: {plain:.2f} CPU s/epoch on {len(x)} images")
    runs = [(n, {}) for n in DEFENSES.names() if not n.startswith("at")]
    runs += [(n, {"steps": s, "step": (8 if n == "at8" else 4) / 255 * 2 / s if s < 10 else (2 if n == "at8" else 1) / 255})
             for s in map(int, a.at_steps.split(",")) for n in ("at8",)]
    for name, over in runs:
        dfn = DEFENSES.get(name).factory(DEFENSES.params(name, over))
        prep, ep = min((timed_epoch(x, y, shape, k, one, dfn) for _ in range(a.reps)), key=lambda t: t[1])
        label = name + (f"(steps={over['steps']})" if over else "")
        out["defenses"][label] = {"prepare_s": prep, "epoch_s": ep, "relative": ep / plain}
        print(f"{label:18s} prepare {prep:6.2f} s  epoch {ep:7.2f} s  x{ep / plain:5.2f}")
    if not a.skip_recovery:
        model = build_model("cnn", shape, k, seed=0)
        t0 = time.perf_counter()
        hist = train(model, d.x_train, d.y_train, TrainConfig(epochs=a.epochs, batch_size=128, lr=0.05, flip=True),
                     seed=0, x_test=d.x_test, y_test=d.y_test, desc="clean")
        out["clean"] = {"epochs": a.epochs, "train_s": time.perf_counter() - t0,
                        "test_accuracy": hist["final_test_accuracy"]}
        xa, ya = attacker_split(d.x_train, d.y_train, 0.2, seed=0)
        inputs = RecoveryInputs(model, xa, ya, d.x_test, d.y_test, [float(e) for e in a.etas.split(",")], 0)
        for bn in ("frozen", "re-estimated"):
            p = RECOVERY.params("pgd", {"bn": bn})
            t0 = time.perf_counter()
            curve = RECOVERY.get("pgd").factory(inputs, p)
            dt = time.perf_counter() - t0
            out[f"recovery_pgd_{bn}"] = {"seconds": dt, "attacker_images": len(xa), "epochs": p.epochs, "curve": curve}
            print(f"clean model acc {hist['final_test_accuracy']:.3f}; pgd recovery ({bn}, {p.epochs} epochs, "
                  f"{len(xa)} images, {len(inputs.etas)} etas): {dt:.1f} s  "
                  + ", ".join(f"eta {r['eta']}: {r['accuracy']:.3f}" for r in curve))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
