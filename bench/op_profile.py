"""Where one thread's time goes in the main job's two hot loops, and two means measured against them.

1. A training step of the default small CNN (batch 128, channels-last, one thread, as a run's
   training tasks): torch.profiler's operator table. Then K such models trained side by side: K
   separate steps against one step of the K models stacked as one network (grouped convs, per-model
   BN channels, a grouped 1x1 head; the same arithmetic), the way the draws are stacked.
2. A block of weight draws (`draw_accuracies`, 8 draws per pass, 500 image-draws per pass, on the
   CPU as a run's chunk tasks): its operator table, then draws/s at 500, 256 and 128 image-draws
   per pass (smaller passes keep the activations in cache, at more calls).

usage: python bench/op_profile.py [--models 5] [--steps 20] [--rounds 5] [--draws 64]
Random inputs: the time does not depend on the values.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import profile

from certify.certificate.draws import draw_accuracies
from certify.models import GlobalAvgPool, SmallCNN, build_model

BATCH, CLASSES = 128, 10


class StackedCNN(nn.Module):
    """K SmallCNNs (width 8) as one network: model k owns group k of every conv, BN channel block k
    and group k of the head."""

    def __init__(self, k: int, w: int = 8):
        super().__init__()
        self.k = k
        self.body = nn.Sequential(
            nn.Conv2d(3 * k, w * k, 3, padding=1, groups=k), nn.BatchNorm2d(w * k), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(w * k, 2 * w * k, 3, padding=1, groups=k), nn.BatchNorm2d(2 * w * k), nn.MaxPool2d(2),
            nn.ReLU(), nn.Conv2d(2 * w * k, 4 * w * k, 3, padding=1, groups=k), nn.BatchNorm2d(4 * w * k),
            nn.ReLU(), GlobalAvgPool())
        self.head = nn.Conv1d(4 * w * k, CLASSES * k, 1, groups=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x 3K x H x W -> B x K x classes
        return self.head(self.body(x).unsqueeze(-1)).view(len(x), self.k, CLASSES)


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, foreach=True)


def _ms_per_call(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1000


def _table(fn, reps: int) -> str:
    with profile() as p:
        for _ in range(reps):
            fn()
    return p.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)


def training(k: int, steps: int, rounds: int) -> None:
    x = torch.rand(k, BATCH, 3, 32, 32)
    y = torch.randint(0, CLASSES, (k, BATCH))
    models = [SmallCNN(3, CLASSES).to(memory_format=torch.channels_last) for _ in range(k)]
    opts = [_sgd(m) for m in models]
    xs = [x[i].contiguous(memory_format=torch.channels_last) for i in range(k)]
    stacked = StackedCNN(k).to(memory_format=torch.channels_last)
    opt = _sgd(stacked)
    x_cat = x.permute(1, 0, 2, 3, 4).reshape(BATCH, 3 * k, 32, 32).contiguous(memory_format=torch.channels_last)

    def one(i: int = 0) -> None:
        opts[i].zero_grad()
        F.cross_entropy(models[i](xs[i]), y[i]).backward()
        opts[i].step()

    def separate() -> None:
        for i in range(k):
            one(i)

    def together() -> None:  # the sum of the K mean losses: each model's gradient is its own
        opt.zero_grad()
        out = stacked(x_cat)
        F.cross_entropy(out.reshape(-1, CLASSES), y.t().reshape(-1), reduction="sum").div(BATCH).backward()
        opt.step()

    print(f"## One training step of the small CNN (batch {BATCH}, channels-last, 1 thread)\n")
    print(_table(one, steps))
    print(f"{k} models, one step each, ms, in alternating rounds:")
    ratios = []
    for r in range(rounds):
        sep, stk = _ms_per_call(separate, steps), _ms_per_call(together, steps)
        ratios.append(stk / sep)
        print(f"  round {r + 1}: separate {sep:6.1f}  stacked {stk:6.1f}  stacked/separate {stk / sep:.2f}")
    print(f"  median stacked/separate: {sorted(ratios)[len(ratios) // 2]:.2f}x the time\n")


def draws(n: int) -> None:
    model = build_model("cnn", (3, 32, 32), CLASSES, seed=0)
    x, y = torch.rand(1000, 3, 32, 32), torch.randint(0, CLASSES, (1000,))

    def block(image_draws: int = 500) -> None:
        draw_accuracies(model, 0.02, 0, 0, n, x, y, image_draws, 8)

    print(f"## {n} weight draws of the small CNN, 8 stacked per pass, 1,000 test images, 1 thread\n")
    print(_table(block, 1))
    print("draws/s by image-draws per pass (a run uses 500), two rounds:")
    for image_draws in (500, 256, 128, 500, 256, 128):
        print(f"  {image_draws:>4} {n / _ms_per_call(lambda: block(image_draws), 2) * 1000:6.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=5, help="models stacked (issue 31's K)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of separate and stacked steps")
    ap.add_argument("--draws", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    training(args.models, args.steps, args.rounds)
    draws(args.draws)


if __name__ == "__main__":
    main()
