"""The stage graph: inputs before tasks, shared tasks run once, cached tasks skipped, user errors
one line, a Ray worker that dies is retried, and serial equals Ray."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch

from certify.cache import Cache
from certify.errors import UserError
from certify.graph import Graph, Task, run_graph


@pytest.fixture
def by_value(ray_local):
    """Ray workers cannot import test modules: ship this module's functions by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def add(a: dict, b: dict, *, k: int) -> dict:
    return {"v": a["v"] + b["v"] + k}


def fail(a: dict) -> dict:
    raise UserError("stage x: the input is bad")


def _diamond() -> tuple[Graph, list[str]]:
    g = Graph()
    g.const("one", {"v": torch.tensor(1)})
    b = g.add(Task("sum-b", "sum", add, ("one", "one"), {"k": 1}))
    c = g.add(Task("sum-c", "sum", add, ("one", b), {"k": 2}))
    d = g.add(Task("sum-d", "sum", add, (b, c), {"k": 3}, poison="p"))
    return g, [b, c, d]


def test_inputs_must_exist_and_same_key_is_one_task():
    g, keys = _diamond()
    with pytest.raises(ValueError):
        g.add(Task("sum-e", "sum", add, ("missing",), {"k": 0}))
    g.add(Task("sum-b", "sum", add, ("one", "one"), {"k": 1}))
    assert list(g.tasks) == keys


def test_serial_runs_in_order_and_skips_cached(tmp_path):
    g, (b, c, d) = _diamond()
    out = run_graph(g, Cache(tmp_path), executor="serial", t0=time.time())
    assert int(out.values[d]["v"]) == 3 + 6 + 3  # b = 3, c = 1 + 3 + 2
    assert [r["stage"] for r in out.records] == ["sum"] * 3 and out.cached == 0
    assert {r["node"] for r in out.records} == {"driver"}
    assert all(0 <= r["start"] <= r["end"] for r in out.records)
    again = run_graph(_diamond()[0], Cache(tmp_path), executor="serial", t0=time.time())
    assert again.records == [] and again.cached == 3 and int(again.values[d]["v"]) == 12


def test_an_artifact_failing_its_check_is_made_again(tmp_path):
    calls = []

    def make(*, tag: str) -> dict:
        calls.append(tag)
        return {"tag": tag}

    g = Graph()
    g.add(Task("art-1", "art", make, (), {"tag": "lean"}))
    run_graph(g, Cache(tmp_path), executor="serial", t0=time.time())
    g = Graph()
    g.add(Task("art-1", "art", make, (), {"tag": "full"}, accept=lambda a: a["tag"] == "full"))
    out = run_graph(g, Cache(tmp_path), executor="serial", t0=time.time())
    assert calls == ["lean", "full"] and out.values["art-1"]["tag"] == "full"


@pytest.mark.parametrize("executor", ["serial", "ray"])
def test_user_error_in_a_task_is_one_line(tmp_path, executor, request):
    if executor == "ray":
        request.getfixturevalue("by_value")
    g = Graph()
    g.const("one", {"v": 1})
    g.add(Task("bad-1", "bad", fail, ("one",)))
    with pytest.raises(UserError, match=r"^stage x: the input is bad$"):
        run_graph(g, Cache(tmp_path), executor=executor, t0=time.time())
    assert not list(tmp_path.rglob("bad-1*"))  # nothing cached for a failed task


@pytest.mark.slow
def test_ray_equals_serial_and_a_dead_worker_is_retried(tmp_path, by_value):
    marker = tmp_path / "died"

    def dies_once(a: dict, *, k: int) -> dict:
        """Kills its own worker process the first time (no cleanup, no exception)."""
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return {"v": a["v"] * k}

    g, (b, c, d) = _diamond()
    g.add(Task("dies-1", "dies", dies_once, (d,), {"k": 10}))
    on_ray = run_graph(g, Cache(tmp_path / "ray"), executor="ray", t0=time.time())
    assert marker.exists() and int(Path(marker).read_text()) != os.getpid(), "the fault was not injected"
    assert int(on_ray.values["dies-1"]["v"]) == 120
    assert all(r["node"] != "driver" and len(r["node"]) > 8 for r in on_ray.records)
    assert [r["resources"] for r in on_ray.records] == [{"CPU": 1, "GPU": 0}] * 4
    serial = run_graph(g, Cache(tmp_path / "serial"), executor="serial", t0=time.time())
    assert {k: int(v["v"]) for k, v in serial.values.items() if k != "one"} == \
           {k: int(v["v"]) for k, v in on_ray.values.items() if k != "one"}


def test_a_changed_method_file_changes_its_cache_keys(tmp_path, monkeypatch):
    """Artifacts of an earlier version of a method's code are not reused: the key hashes its file."""
    import shutil
    import attacks.random as module
    from attacks.base import POISONS
    from certify import registry

    before = POISONS.code("random")
    copy = tmp_path / "random.py"
    shutil.copy(module.__file__, copy)
    copy.write_text(copy.read_text() + "\n# changed\n")
    monkeypatch.setattr(registry.inspect, "getsourcefile", lambda f: str(copy))
    assert POISONS.code("random") != before
    monkeypatch.undo()
    assert POISONS.code("random") == before
