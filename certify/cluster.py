"""Ray, as its users run it: a local instance with every core by default, or an existing cluster
by address. Started in the background so its start-up overlaps the run's first work.

The starting thread stays alive for the life of the process: Ray's daemons get a parent-death
signal when the *thread* that spawned them exits, which would kill a local instance seconds after
a short-lived starter thread returned.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from certify import device as devices
from certify.errors import UserError

_lock = threading.Lock()
_thread: threading.Thread | None = None
_ready = threading.Event()
_error: BaseException | None = None


def _init(address: str | None, workers: int | None) -> None:
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
        ray.init(num_cpus=workers or devices.default_threads(), **kwargs)


def start(address: str | None, workers: int | None) -> None:
    """Start (or join) Ray in the background; `connect` waits for it."""
    global _thread

    def target():
        global _error
        try:
            _init(address, workers)
        except BaseException as e:  # reported when a task needs Ray
            _error = e
        _ready.set()
        threading.Event().wait()  # keep the spawning thread (and so Ray's daemons) alive

    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=target, daemon=True, name="ray-start")
            _thread.start()


def connect(address: str | None, workers: int | None) -> bool:
    """Wait until Ray is up; return whether the cluster has GPUs (logical ones count)."""
    import ray

    start(address, workers)
    _ready.wait()
    if _error is not None:
        where = f"at {address}" if address else "locally"
        raise UserError(f"could not start or join Ray {where}: {str(_error).splitlines()[0]}")
    return ray.cluster_resources().get("GPU", 0) > 0
