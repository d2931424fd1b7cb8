"""Certification throughput: a straightforward reference loop against the engine, side by side.

The reference evaluates one draw at a time, adding the noise to the weights in place and
subtracting it afterwards, with a DataLoader pass over the test set per draw (as the published
code does). The engine evaluates the same draws (same noise: draw j depends only on (seed, j))
through `certify.execution.map_draws`, serial and on Ray. Reports draws per second, the ratio,
the fraction of the arithmetic limit (forward FLOPs per draw x draws/s / measured matmul rate),
and whether the certificates agree.

usage: python bench/certify_throughput.py [--samples 1000] [--test-images 1000] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from certify import bounds, execution
from certify.cache import Cache
from certify.data import load_dataset
from certify.models import build_model
from certify.smoothing import draw_noise, trainable
from certify.training import TrainConfig, train


def forward_flops(model: torch.nn.Module, shape) -> int:
    """2 x multiply-adds of one image's forward pass (conv and linear layers)."""
    macs = 0

    def conv_hook(m, i, o):
        nonlocal macs
        macs += o.numel() // o.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, i, o):
        nonlocal macs
        macs += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(lin_hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return 2 * macs


def matmul_rate(threads: int, n: int = 2048, reps: int = 8) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * n ** 3 / (time.perf_counter() - t)


@torch.no_grad()
def reference_loop(model, sigma, seed, n, x, y, batch=500) -> np.ndarray:
    model.eval()
    params = trainable(model)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)
    out = []
    for j in range(n):
        noise = draw_noise(params, seed, j)
        named = dict(model.named_parameters())
        for k, e in noise.items():
            named[k].add_(sigma * e)
        correct = 0
        for xb, yb in loader:
            correct += (model(xb).argmax(1) == yb).sum().item()
        for k, e in noise.items():
            named[k].sub_(sigma * e)
        out.append(correct / len(x))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--test-images", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    threads = 2
    torch.set_num_threads(threads)
    data = load_dataset("cifar10-mini")
    x, y = data.x_test[:args.test_images], data.y_test[:args.test_images]
    model = build_model("cnn", data.shape, 10, seed=0)
    train(model, data.x_train, data.y_train, TrainConfig(epochs=3), seed=0)
    flops = forward_flops(model, data.shape) * len(x)
    rate = matmul_rate(threads)
    res = {"samples": args.samples, "test_images": len(x), "flops_per_draw": flops, "matmul_flops": rate}
    n, seed = args.samples, 11

    def record(name, fn):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        acc = fn()
        dt = time.perf_counter() - t
        res[name] = {"seconds": dt, "draws_per_s": n / dt, "fraction_of_limit": n / dt * flops / rate}
        print(f"{name:>10}: {dt:7.1f} s, {n / dt:7.1f} draws/s, {100 * n / dt * flops / rate:5.1f} % of the limit",
              flush=True)
        return acc

    if not args.skip_reference:
        ref = record("reference", lambda: reference_loop(model, args.sigma, seed, n, x, y))
    job = execution.DrawJob("cnn", data.shape, 10, model.state_dict(), args.sigma, seed, x, y, 250, 1, threads)
    with tempfile.TemporaryDirectory() as d:
        serial = record("serial", lambda: execution.map_draws(job, n, 50, executor="serial", workers=1,
                                                              address=None, cache=Cache(d + "/s"), key="draws-s"))
        job1 = execution.DrawJob("cnn", data.shape, 10, model.state_dict(), args.sigma, seed, x, y, 250, 1, 1)
        execution.start_ray(None, args.workers)
        t = time.perf_counter()
        execution._wait_ray(None, args.workers)
        res["ray_start_seconds"] = time.perf_counter() - t
        ray1 = record("ray", lambda: execution.map_draws(job1, n, 50, executor="ray", workers=args.workers,
                                                         address=None, cache=Cache(d + "/r"), key="draws-r"))
    grid = [0.05, 0.1, 0.25, 0.5, 1.0]
    curve = lambda a: [p["learnability"] for p in bounds.certify_curve(a, 0.9, 0.01, args.sigma, grid)]
    if not args.skip_reference:
        res["ratio_serial_vs_reference"] = res["reference"]["seconds"] / res["serial"]["seconds"]
        res["ratio_ray_vs_reference"] = res["reference"]["seconds"] / res["ray"]["seconds"]
        res["max_abs_draw_difference_vs_reference"] = float(np.abs(ref - serial).max())
        res["certificates_identical_vs_reference"] = curve(ref) == curve(serial)
    res["serial_equals_ray"] = bool(np.array_equal(serial, ray1)) if len(serial) == len(ray1) else False
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
