"""Serial and Ray executors behind one call, with a checkpoint for every finished chunk of draws.

Chunks of draw indices are the work units. A finished chunk is saved at once under the draws'
cache key, so an interrupted run resumed later computes only the missing chunks, and a chunk lost
with a dead Ray worker is retried on a restarted one. Results are assembled in draw order: the
same seed gives the same draws however many workers ran them.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from certify import device as devices
from certify.cache import Cache
from certify.errors import UserError
from certify.models import build_model
from certify.progress import progress
from certify.smoothing import draw_accuracies


@dataclass
class DrawJob:
    """Everything a worker needs to evaluate draws: built once per worker."""
    arch: str
    shape: tuple
    num_classes: int
    state: dict[str, torch.Tensor]
    sigma: float
    seed: int
    x: torch.Tensor
    y: torch.Tensor
    eval_batch: int
    draws_per_pass: int
    threads: int
    device: str = "cpu"

    def model(self):
        m = build_model(self.arch, self.shape, self.num_classes, seed=0)
        m.load_state_dict(self.state)
        return m.to(self.device).eval()


class Evaluator:
    """Holds one model and the resident test set; evaluates ranges of draws."""

    def __init__(self, job: DrawJob):
        devices.set_threads(job.threads)
        self.job = job
        self.model = job.model()
        self.x = job.x.to(job.device)
        self.y = job.y.to(job.device)

    def run(self, start: int, stop: int) -> tuple[int, np.ndarray]:
        j = self.job
        return start, draw_accuracies(self.model, j.sigma, j.seed, start, stop, self.x, self.y,
                                      j.eval_batch, j.draws_per_pass)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


# --- Ray -----------------------------------------------------------------------------------------
_ray_lock = threading.Lock()
_ray_thread: threading.Thread | None = None
_ray_ready = threading.Event()
_ray_error: BaseException | None = None


def _ray_init(address: str | None, workers: int) -> None:
    import logging

    import ray

    if ray.is_initialized():
        return
    # Ray's start-up chatter (auth notes, signal handlers in a non-main thread) is not the user's concern
    logging.getLogger("ray").setLevel(logging.ERROR)
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                                  ignore_reinit_error=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=workers, **kwargs)


def start_ray(address: str | None, workers: int) -> None:
    """Start (or join) Ray in the background, so its start-up overlaps training.

    The starting thread stays alive for the life of the process: Ray's daemons get a parent-death
    signal when the *thread* that spawned them exits, which would kill a local cluster seconds
    after a short-lived starter thread returned.
    """
    global _ray_thread

    def target():
        global _ray_error
        try:
            _ray_init(address, workers)
        except BaseException as e:  # reported when the draws need Ray
            _ray_error = e
        _ray_ready.set()
        threading.Event().wait()  # keep the spawning thread (and so Ray's daemons) alive

    with _ray_lock:
        if _ray_thread is None:
            _ray_thread = threading.Thread(target=target, daemon=True, name="ray-start")
            _ray_thread.start()


def _wait_ray(address: str | None, workers: int) -> None:
    start_ray(address, workers)
    _ray_ready.wait()
    if _ray_error is not None:
        where = f"at {address}" if address else "locally"
        raise UserError(f"could not start or join Ray {where}: {str(_ray_error).splitlines()[0]}")


MAX_RETRIES = 3  # per chunk, when its worker dies


def _run_ray(job: DrawJob, todo: list[tuple[int, int]], workers: int, address: str | None, on_done) -> None:
    """Chunks go to `workers` actors (each loads the model once), two in flight per actor. A chunk
    whose actor died goes back to the queue and a fresh actor replaces the dead one."""
    import ray
    from ray.exceptions import RayActorError

    _wait_ray(address, workers)
    num_gpus = 1.0 / workers if job.device.startswith("cuda") else 0
    Remote = ray.remote(num_cpus=1, num_gpus=num_gpus)(Evaluator)
    job_ref = ray.put(job)
    queue = list(todo)
    tries = {c: 0 for c in todo}
    pending: dict = {}

    def submit(actor) -> None:
        if queue:
            chunk = queue.pop(0)
            pending[actor.run.remote(*chunk)] = (actor, chunk)

    actors = [Remote.remote(job_ref) for _ in range(min(workers, len(todo)))]
    for actor in actors:
        submit(actor)
        submit(actor)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        actor, chunk = pending.pop(done[0])
        try:
            start, acc = ray.get(done[0])
        except RayActorError:
            tries[chunk] += 1
            if tries[chunk] > MAX_RETRIES:
                raise UserError(f"draws {chunk[0]}..{chunk[1] - 1}: their Ray worker died {tries[chunk]} times")
            queue.insert(0, chunk)
            if actor in actors:  # replace the dead actor once, however many of its chunks were lost
                actors[actors.index(actor)] = actor = Remote.remote(job_ref)
            else:
                actor = next(a for a in actors if a is not actor)
            submit(actor)
            continue
        on_done(start, acc)
        submit(actor)
    for actor in actors:
        ray.kill(actor)


def map_draws(job: DrawJob, n: int, chunk: int, *, executor: str, workers: int, address: str | None,
              cache: Cache, key: str, desc: str = "draws") -> np.ndarray:
    """Accuracies of draws 0..n-1 in draw order; finished chunks come from / go to the cache."""
    out = np.full(n, np.nan)
    todo = []
    for lo, hi in chunks(n, chunk):
        saved = cache.array(key, f"{lo:07d}-{hi:07d}")
        if saved is not None and saved.shape == (hi - lo,):
            out[lo:hi] = saved
        else:
            todo.append((lo, hi))
    bar = progress(total=n, initial=n - sum(hi - lo for lo, hi in todo), desc=desc, unit="draw")

    def on_done(start: int, acc: np.ndarray) -> None:
        stop = start + len(acc)
        cache.put_array(key, f"{start:07d}-{stop:07d}", acc)
        out[start:stop] = acc
        bar.update(len(acc))

    if todo:
        if executor == "ray":
            _run_ray(job, todo, workers, address, on_done)
        else:
            threads = torch.get_num_threads()  # the run's own setting, restored after the draws
            evaluator = Evaluator(job)
            try:
                for lo, hi in todo:
                    on_done(*evaluator.run(lo, hi))
            finally:
                devices.set_threads(threads)
    bar.close()
    assert not np.isnan(out).any()
    return out
