"""Certification throughput: a straightforward reference loop, the draw loop and the stacked pass, and
the engine, side by side.

The reference evaluates one draw at a time, adding the noise to the weights in place and
subtracting it afterwards, with a DataLoader pass over the test set per draw (as the published
code does). `loop` and `stacked` call `draw_accuracies` in-process on the same draws (same noise:
draw j depends only on (seed, j)): one draw per pass, as before issue 27, and `--draws-per-pass`
draws stacked into one pass, as a run's chunk tasks do on the CPU. The engine evaluates them
through `certify.certificate.certify_weights` (the chunk tasks of a run), serial and on a local Ray
instance of each worker count. Everything runs with `--threads` torch threads per evaluator (1,
as a run's draw workers). Reports draws per second, GFLOP/s, the fraction of the arithmetic limit
(forward FLOPs per draw x draws/s / the matmul rate measured at the same thread count, the higher
of a measurement before and one after the rows, times the Ray workers; for the in-process paths
also per CPU second of this process, which stays meaningful on a machine other jobs share), the
ratio to the reference and to the loop, and whether the draws and certificates agree.

usage: python bench/certify_throughput.py [--samples 100,1000,10000] [--test-images 250,1000] [--workers 1,2]
       [--reference-up-to 1000] [--paths reference,loop,stacked,serial,ray] [--threads 1] [--draws-per-pass 8]
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
from certify.certificate.draws import draw_accuracies, draw_noise
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


def matmul_rate(threads: int, n: int = 2048, reps: int = 8) -> tuple[float, float]:
    """FLOP/s per wall second and per CPU second of this process (the CPU rate, divided by the
    threads, is what a core gives while it runs this process on a shared machine)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t, c = time.perf_counter(), time.process_time()
    for _ in range(reps):
        a @ b
    flops = reps * 2 * n ** 3
    return flops / (time.perf_counter() - t), flops / (time.process_time() - c)


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


PATHS = ("reference", "loop", "stacked", "serial", "ray")
IN_PROCESS = ("reference", "loop", "stacked", "serial")


def paths(text: str) -> list[str]:
    chosen = text.split(",")
    if set(chosen) - set(PATHS):
        raise argparse.ArgumentTypeError(f"paths are {', '.join(PATHS)}")
    return chosen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=ints, default=[1000], help="comma-separated N values")
    ap.add_argument("--test-images", type=ints, default=[1000], help="comma-separated test-set sizes")
    ap.add_argument("--workers", type=ints, default=[2], help="comma-separated Ray worker counts")
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--reference-up-to", type=int, default=1000,
                    help="run the reference loop only for N up to this (it costs ~0.1 s per draw)")
    ap.add_argument("--paths", type=paths, default=list(PATHS), help="comma-separated, of " + ",".join(PATHS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per evaluator (a run's draw workers: 1)")
    ap.add_argument("--draws-per-pass", type=int, default=8, help="draws per stacked pass (a run's CPU value)")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs of the benchmarked model")
    args = ap.parse_args()
    threads, eval_batch = args.threads, RunConfig().smoothing.eval_batch
    torch.set_num_threads(threads)
    data = load_dataset("cifar10-mini")
    model = build_model("cnn", data.shape, 10, seed=0)
    train(model, data.x_train, data.y_train, TrainConfig(epochs=args.epochs), seed=0)
    per_image = forward_flops(model, data.shape)
    rates = [matmul_rate(threads)]
    res = {"flops_per_image": per_image, "threads": threads, "draws_per_pass": args.draws_per_pass,
           "eval_batch": eval_batch, "runs": [], "ray_start_seconds": {}}
    seed = derive(0, "draws")  # the engine's draw stream for run seed 0
    timed = []  # each path's timings: fractions are filled in once the second matmul rate is known

    def record(row, name, n, fn, evaluators=1):
        torch.set_num_threads(threads)
        t, c = time.perf_counter(), time.process_time()
        acc = fn()
        dt, dc = time.perf_counter() - t, time.process_time() - c
        gflops = n / dt * row["flops_per_draw"] / 1e9
        # the limit of `evaluators` Ray workers is that many times one evaluator's
        row[name] = {"seconds": dt, "draws_per_s": n / dt, "gflops": gflops, "evaluators": evaluators}
        line = f"{gflops:6.1f} GFLOP/s, {100 * gflops * 1e9 / (evaluators * rates[0][0]):5.1f} % of the first matmul rate"
        if name in IN_PROCESS:  # the CPU time of Ray's workers is not this process's
            cpu_gflops = n / dc * row["flops_per_draw"] / 1e9
            row[name].update(cpu_seconds=dc, cpu_gflops=cpu_gflops)
            line += f"; per CPU second {cpu_gflops:6.1f} GFLOP/s, {100 * cpu_gflops * 1e9 / rates[0][1]:5.1f} %"
        timed.append(row[name])
        print(f"N={n:>6} test={row['test_images']:>5} {name:>10}: {dt:7.1f} s, {n / dt:7.1f} draws/s, " + line, flush=True)
        return acc

    grid = [0.05, 0.1, 0.25, 0.5, 1.0]
    curve = lambda a: [p["learnability"] for p in bounds.certify_curve(a, 0.9, 0.01, args.sigma, grid)]  # noqa: E731

    def agreement(row, name, a, b):
        row[f"{name}_draws_differing"] = int((a != b).sum())
        row[f"{name}_max_abs_draw_difference"] = float(np.abs(a - b).max())
        row[f"{name}_certificates_identical"] = curve(a) == curve(b)

    for m in args.test_images:
        x, y = data.x_test[:m], data.y_test[:m]
        for n in args.samples:
            row = {"samples": n, "test_images": len(x), "flops_per_draw": per_image * len(x)}
            acc = {}
            if "reference" in args.paths and n <= args.reference_up_to:
                acc["reference"] = record(row, "reference", n, lambda: reference_loop(model, args.sigma, seed, n, x, y))
            if "loop" in args.paths:
                acc["loop"] = record(row, "loop", n, lambda: draw_accuracies(model, args.sigma, seed, 0, n, x, y,
                                                                             eval_batch))
            if "stacked" in args.paths:
                acc["stacked"] = record(row, "stacked", n, lambda: draw_accuracies(
                    model, args.sigma, seed, 0, n, x, y, eval_batch, args.draws_per_pass))
            sub = Dataset("cifar10-mini", data.x_train, data.y_train, x, y, data.classes)
            state = model.state_dict()
            with tempfile.TemporaryDirectory() as d:
                if "serial" in args.paths:
                    acc["serial"] = record(row, "serial", n, lambda: engine(sub, state, args.sigma, n, "serial",
                                                                            threads, d + "/s"))
                for w in args.workers if "ray" in args.paths else []:
                    res["ray_start_seconds"][w] = ray_instance(w)
                    acc[f"ray{w}"] = record(row, f"ray{w}", n, lambda: engine(sub, state, args.sigma, n, "ray", threads,
                                                                              d + f"/r{w}"), w)
            if "loop" in acc:
                for name in [k for k in acc if k not in ("reference", "loop")]:
                    agreement(row, f"{name}_vs_loop", acc[name], acc["loop"])
                    row[f"ratio_{name}_vs_loop"] = row["loop"]["seconds"] / row[name]["seconds"]
            if "reference" in acc:
                for name in [k for k in acc if k != "reference"]:
                    agreement(row, f"{name}_vs_reference", acc[name], acc["reference"])
                    row[f"ratio_{name}_vs_reference"] = row["reference"]["seconds"] / row[name]["seconds"]
            if "ray1" in acc:
                for w in args.workers:
                    row[f"efficiency_ray{w}"] = row["ray1"]["seconds"] / (w * row[f"ray{w}"]["seconds"])
            res["runs"].append(row)
    rates.append(matmul_rate(threads))
    limit, cpu_limit = max(r[0] for r in rates), max(r[1] for r in rates)
    res["matmul_flops"] = {"before": rates[0][0], "after": rates[1][0], "limit": limit,
                           "per_cpu_second": {"before": rates[0][1], "after": rates[1][1], "limit": cpu_limit}}
    for t in timed:
        t["fraction_of_limit"] = t["gflops"] * 1e9 / (t["evaluators"] * limit)
        if "cpu_gflops" in t:
            t["cpu_fraction_of_limit"] = t["cpu_gflops"] * 1e9 / cpu_limit
    print(f"matmul rate ({threads} thread(s), 2048^2): {rates[0][0] / 1e9:.1f} GFLOP/s before, {rates[1][0] / 1e9:.1f} "
          f"after (per CPU second {rates[0][1] / 1e9:.1f} and {rates[1][1] / 1e9:.1f}); fractions of the higher:")
    for row in res["runs"]:
        print(f"  N={row['samples']:>6} test={row['test_images']:>5}: " + ", ".join(
            f"{k} {100 * v['fraction_of_limit']:.1f} %" + (f" ({100 * v['cpu_fraction_of_limit']:.1f} % per CPU second)"
                                                          if "cpu_fraction_of_limit" in v else "")
            for k, v in row.items() if isinstance(v, dict)))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
