"""Certification throughput: a straightforward reference loop against the engine, side by side.

The reference evaluates one draw at a time, adding the noise to the weights in place and
subtracting it afterwards, with a DataLoader pass over the test set per draw (as the published
code does). The engine evaluates the same draws (same noise: draw j depends only on (seed, j))
through `certify.certificate.certify_weights` (the chunk tasks of a run), serial and on a local
Ray instance of each worker count. Reports draws per second, the ratio,
the fraction of the arithmetic limit (forward FLOPs per draw x draws/s / measured matmul rate),
and whether the certificates agree.

usage: python bench/certify_throughput.py [--samples 100,1000,10000] [--test-images 250,1000] [--workers 1,2]
       [--reference-up-to 1000]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from certify.cache import Cache
from certify.certificate import bounds, certify_weights
from certify.certificate.draws import draw_noise
from certify.config import RunConfig
from certify.context import ModelSpec, RunContext
from certify.data import Dataset, load_dataset
from certify.models import build_model, trainable
from certify.seeding import derive
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


def engine(data: Dataset, state: dict, sigma: float, n: int, executor: str, threads: int, cache: str) -> np.ndarray:
    """The run's own draw tasks (seed 0's draw stream) on `data`'s test set."""
    cfg = RunConfig(samples=n, executor=executor)
    cfg.smoothing.threads = threads
    ctx = RunContext(cfg, data, Cache(cache), ModelSpec("cnn", data.shape, 10), "cpu", "data-bench", "bench")
    ctx.graph.const(ctx.data_key, data)
    return certify_weights(ctx, state, sigma)[0]


def ray_instance(workers: int) -> float:
    """A fresh local Ray instance with `workers` CPUs; returns its start-up time."""
    import ray

    ray.shutdown()
    t = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.get(ray.remote(lambda: 0).remote())
    return time.perf_counter() - t


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=ints, default=[1000], help="comma-separated N values")
    ap.add_argument("--test-images", type=ints, default=[1000], help="comma-separated test-set sizes")
    ap.add_argument("--workers", type=ints, default=[2], help="comma-separated Ray worker counts")
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--reference-up-to", type=int, default=1000,
                    help="run the reference loop only for N up to this (it costs ~0.1 s per draw)")
    args = ap.parse_args()
    threads = 2
    torch.set_num_threads(threads)
    data = load_dataset("cifar10-mini")
    model = build_model("cnn", data.shape, 10, seed=0)
    train(model, data.x_train, data.y_train, TrainConfig(epochs=3), seed=0)
    per_image = forward_flops(model, data.shape)
    rate = matmul_rate(threads)
    res = {"flops_per_image": per_image, "matmul_flops": rate, "runs": []}
    seed = derive(0, "draws")  # the engine's draw stream for run seed 0
    res["ray_start_seconds"] = {}

    def record(row, name, n, flops, fn):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        acc = fn()
        dt = time.perf_counter() - t
        row[name] = {"seconds": dt, "draws_per_s": n / dt, "fraction_of_limit": n / dt * flops / rate}
        print(f"N={n:>6} test={row['test_images']:>5} {name:>10}: {dt:7.1f} s, {n / dt:7.1f} draws/s, "
              f"{100 * n / dt * flops / rate:5.1f} % of the limit", flush=True)
        return acc

    grid = [0.05, 0.1, 0.25, 0.5, 1.0]
    curve = lambda a: [p["learnability"] for p in bounds.certify_curve(a, 0.9, 0.01, args.sigma, grid)]  # noqa: E731
    for m in args.test_images:
        x, y = data.x_test[:m], data.y_test[:m]
        flops = per_image * len(x)
        for n in args.samples:
            row = {"samples": n, "test_images": len(x), "flops_per_draw": flops}
            if n <= args.reference_up_to:
                ref = record(row, "reference", n, flops, lambda: reference_loop(model, args.sigma, seed, n, x, y))
            sub = Dataset("cifar10-mini", data.x_train, data.y_train, x, y, data.classes)
            state = model.state_dict()
            with tempfile.TemporaryDirectory() as d:
                serial = record(row, "serial", n, flops, lambda: engine(sub, state, args.sigma, n, "serial", threads,
                                                                        d + "/s"))
                for w in args.workers:
                    res["ray_start_seconds"][w] = ray_instance(w)
                    on_ray = record(row, f"ray{w}", n, flops, lambda: engine(sub, state, args.sigma, n, "ray", 1,
                                                                             d + f"/r{w}"))
                    row[f"serial_equals_ray{w}"] = bool(np.array_equal(serial, on_ray))
            if "reference" in row:
                row["max_abs_draw_difference_vs_reference"] = float(np.abs(ref - serial).max())
                row["certificates_identical_vs_reference"] = curve(ref) == curve(serial)
                for name in [k for k in row if k == "serial" or k.startswith("ray") and "equals" not in k]:
                    row[f"ratio_{name}_vs_reference"] = row["reference"]["seconds"] / row[name]["seconds"]
            if len(args.workers) > 1 and 1 in args.workers:
                for w in args.workers:
                    row[f"efficiency_ray{w}"] = row["ray1"]["seconds"] / (w * row[f"ray{w}"]["seconds"])
            res["runs"].append(row)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
