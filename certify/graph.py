"""The evaluation as a graph of tasks, run on Ray or in-process.

A `Task` makes one artifact: its key is the cache key of that artifact, its inputs are the keys of
the artifacts it needs (other tasks, or constants such as the dataset), and it declares the CPU
threads and the GPU fraction it asks for. `run_graph` skips every task whose artifact is already
cached, and runs the rest:

- `serial`: in this process, in the order the tasks were added (a topological order: a task can
  only name inputs added before it);
- `ray`: every task is a Ray task that takes the object references of its inputs, so Ray starts it
  when they are ready and ships them through its object store. Tasks return artifacts by value and
  only the driver reads and writes the cache, so workers need the package, not a shared disk.

A task that raises `UserError` ends the run with that one line; a task whose worker dies is retried
by Ray (`MAX_RETRIES`). One record per executed task (stage, poison, defense, node, start, end)
says where the time went.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from certify import device as devices
from certify.cache import Cache
from certify.errors import UserError
from certify.progress import progress, say

MAX_RETRIES = 3  # per task, when its Ray worker dies


@dataclass(frozen=True)
class Task:
    key: str  # cache key of the artifact it makes
    stage: str  # craft, train, defended, independent, sigma, surrogate, draws, sal, mi, recovery
    fn: Callable[..., dict]  # fn(*input values, **args) -> artifact (tensors and plain values)
    inputs: tuple[str, ...] = ()
    args: dict = field(default_factory=dict)
    poison: str | None = None
    defense: str | None = None
    threads: int = 1  # torch threads inside the task (part of its key: they change float sums)
    gpu: float = 0.0  # fraction of a GPU it asks for where the cluster has GPUs
    # a cached artifact that fails this check is made again (e.g. a model stored without the
    # per-epoch checkpoints a later run needs: same key, same weights)
    accept: Callable[[dict], bool] | None = None
    quiet: bool = False  # no progress line when it finishes (draw chunks: one line per certificate)

    @property
    def label(self) -> str:
        what = self.stage + (f" {self.poison}" if self.poison else "") + (f" + {self.defense}" if self.defense else "")
        return what


class Graph:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.consts: dict[str, Any] = {}

    def const(self, key: str, value: Any) -> str:
        """An input that is not made by a task (the dataset, a released set given by the user)."""
        self.consts[key] = value
        return key

    def add(self, task: Task) -> str:
        """Add `task` (a task with the same key is already the same task: shared, not run twice)."""
        if task.key in self.tasks or task.key in self.consts:
            return task.key
        missing = [k for k in task.inputs if k not in self.tasks and k not in self.consts]
        if missing:
            raise ValueError(f"task {task.key}: inputs not in the graph: {missing}")
        self.tasks[task.key] = task
        return task.key


@dataclass
class Outcome:
    values: dict[str, Any]  # every task's artifact and every constant, by key
    records: list[dict]  # one per executed task, in finishing order
    cached: int  # tasks served from the cache


def _execute(fn: Callable, args: dict, threads: int, *inputs) -> Any:
    """Run one task here; a user error comes back as a value so the driver can say it in one line."""
    previous = devices.get_threads()
    devices.set_threads(threads)
    try:
        return {"value": fn(*inputs, **args)}
    except UserError as e:
        return {"error": str(e)}
    finally:
        devices.set_threads(previous)


def _ray_execute(fn: Callable, args: dict, threads: int, *inputs) -> tuple[Any, dict]:
    import ray

    start = time.time()
    result = _execute(fn, args, threads, *inputs)
    rt = ray.get_runtime_context()
    meta = {"node": rt.get_node_id(), "start": start, "end": time.time(), "error": result.get("error"),
            "gpus": [str(g) for g in rt.get_accelerator_ids().get("GPU", [])]}
    return result.get("value"), meta


def _record(task: Task, node: str, start: float, end: float, t0: float, **extra) -> dict:
    return {"stage": task.stage, "poison": task.poison, "defense": task.defense, "node": node,
            "start": round(start - t0, 3), "end": round(end - t0, 3), **extra}


def run_graph(graph: Graph, cache: Cache, *, executor: str, t0: float, cluster=None) -> Outcome:
    """Make every artifact of `graph` that the cache does not hold; return all of them.

    `t0` is the run's start (records are seconds from it); `cluster` (for `ray`) is called once,
    only if some task must run, and must leave Ray connected; it returns whether the cluster has GPUs.
    """
    values: dict[str, Any] = dict(graph.consts)
    todo: list[Task] = []
    for key, task in graph.tasks.items():
        saved = cache.load(key)
        if saved is not None and (task.accept is None or task.accept(saved)):
            values[key] = saved
        else:
            todo.append(task)
    cached = len(graph.tasks) - len(todo)
    if todo:
        say(f"{len(todo)} tasks to run ({cached} cached), executor {executor}")
    records: list[dict] = []
    bar = progress(total=len(todo), desc="tasks", unit="task")

    def finish(task: Task, value: Any, record: dict) -> None:
        cache.save(task.key, value)
        values[task.key] = value
        records.append(record)
        bar.update(1)
        if not task.quiet:
            say(f"  done: {task.label} ({record['end'] - record['start']:.1f} s, {record['node'][:8]})")

    if executor == "ray" and todo:
        _run_ray(todo, values, finish, t0, cluster)
    else:
        for task in todo:
            start = time.time()
            result = _execute(task.fn, task.args, task.threads, *(values[k] for k in task.inputs))
            if "error" in result:
                raise UserError(result["error"])
            finish(task, result["value"], _record(task, "driver", start, time.time(), t0))
    bar.close()
    return Outcome(values, records, cached)


def _run_ray(todo: list[Task], values: dict, finish, t0: float, cluster) -> None:
    import ray
    from ray.exceptions import RayError

    has_gpus = cluster() if cluster else False
    remote = ray.remote(_ray_execute)
    refs: dict[str, Any] = {}

    def ref_of(key: str):
        if key not in refs:  # a constant or a cached artifact a pending task needs: shipped once
            refs[key] = ray.put(values[key])
        return refs[key]

    pending = {}
    for task in todo:
        gpu = task.gpu if has_gpus else 0
        value_ref, meta_ref = remote.options(num_cpus=task.threads, num_gpus=gpu, num_returns=2,
                                             max_retries=MAX_RETRIES, retry_exceptions=False).remote(
            task.fn, task.args, task.threads, *(ref_of(k) for k in task.inputs))
        refs[task.key] = value_ref
        pending[meta_ref] = (task, value_ref, {"CPU": task.threads, "GPU": gpu})
    # Ray keeps an object while a task that takes it is pending; the driver's own references would
    # pin every artifact in the object store until the run ends
    refs.clear()
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            task, value_ref, resources = pending.pop(done[0])
            try:
                meta = ray.get(done[0])
                if meta["error"] is not None:
                    raise UserError(meta["error"])
                value = ray.get(value_ref)
            except RayError as e:
                raise UserError(f"task {task.label} failed on Ray after {MAX_RETRIES} retries: "
                                f"{str(e).strip().splitlines()[0][:300]}") from None
            del value_ref  # the driver holds the value now
            finish(task, value, _record(task, meta["node"], meta["start"], meta["end"], t0,
                                        resources=resources, gpus=meta["gpus"]))
    finally:
        for meta_ref, (_, value_ref, _) in pending.items():  # on error: nothing keeps running for nobody
            ray.cancel(value_ref, force=True)
