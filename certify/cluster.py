"""Ray, as its users run it: a local instance with every core by default, or an existing cluster
by address. Started in the background so its start-up overlaps the run's first work.

The starting thread stays alive for the life of the process: Ray's daemons get a parent-death
signal when the *thread* that spawned them exits, which would kill a local instance seconds after
a short-lived starter thread returned.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from certify import device as devices
from certify.errors import UserError

_lock = threading.Lock()
_thread: threading.Thread | None = None
_ready = threading.Event()
_error: BaseException | None = None
_abandoned = False  # a join gave up on while Ray's client still waits inside it


def abandoned() -> bool:
    return _abandoned


AUTH_HINT = ("if the cluster uses Ray's token authentication, give this machine its token (`ray get-auth-token` "
             "on the head node) in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")


def _token_present() -> bool:
    """A token where Ray looks for one (its precedence: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, the default file)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def use_token(address: str | None) -> bool:
    """Join with token authentication where a token is present and the user set no mode.

    A `ray start --head` that finds a token (one is written by any local `ray.init()` of Ray 2.59 and
    later) requires it, but a client sends its token only when RAY_AUTH_MODE=token; a token sent to
    a cluster without authentication is ignored, so sending one where present joins both."""
    if not address or "RAY_AUTH_MODE" in os.environ or not _token_present():
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    return True


def cpus() -> int | None:
    """The CPUs of the Ray instance this process joined or started (None where Ray is not running)."""
    ray = sys.modules.get("ray")  # never imported just to ask
    if ray is None or not ray.is_initialized():
        return None
    return int(ray.cluster_resources().get("CPU", 0))


def _init(address: str | None, workers: int | None) -> None:
    use_token(address)  # before Ray is imported: it reads the mode once
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


def probe(address: str, timeout: float) -> None:
    """A cluster address that accepts no connection is one line now, not a join that waits forever."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not port.isdigit() or not host:
        raise UserError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except UnicodeError:  # a hostname label over 63 characters, or an empty one, fails IDNA encoding
        raise UserError(f"--address {address!r}: not a valid hostname (each dot-separated label is "
                        "1 to 63 characters)") from None
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise UserError(f"Ray cluster at {address} does not answer ({reason}); is `ray start` running there?") from None


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


@contextlib.contextmanager
def _muted_stderr(mute: bool):
    """While joining a cluster, Ray's C++ client logs every failed attempt straight to fd 2; the
    user gets one line from us instead."""
    if not mute:
        yield
        return
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def connect(address: str | None, workers: int | None, timeout: float) -> bool:
    """Wait until Ray is up (at most `timeout` seconds for a cluster); return whether the cluster
    has GPUs (logical ones count)."""
    if address:
        probe(address, timeout)
    with _muted_stderr(bool(address)):
        start(address, workers)
        ready = _ready.wait(timeout if address else None)
    if not ready:
        global _abandoned
        _abandoned = True
        raise UserError(f"Ray cluster at {address} did not answer within {timeout:g} s (connect_timeout)")
    if _error is not None:
        where = f"at {address}" if address else "locally"
        hint = f"; {AUTH_HINT}" if address else ""
        raise UserError(f"could not start or join Ray {where}: {str(_error).splitlines()[0]}{hint}")
    import ray  # after `_init`: Ray reads the authentication mode when first imported

    return ray.cluster_resources().get("GPU", 0) > 0
