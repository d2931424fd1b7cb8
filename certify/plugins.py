"""Third-party methods through Python entry points (groups `certify.poisons`, `certify.defenses`,
`certify.recovery`).

An entry point names a module (`checkerboard = certify_checkerboard`); importing it registers its
methods with the decorators the built-in files use, under the same Params contract. A registry
imports its group's plugins on its first lookup, after its built-in package, so a plugin can never
shadow a built-in name; lookups happen wherever a task runs, so Ray workers load the plugins
installed in their environment too.

A plugin that fails to import (whatever it raises, SystemExit and KeyboardInterrupt included), or
whose distribution has no name, registers nothing; a registration that is refused (a name already
taken or reserved, Params that break the contract) is dropped alone. Either is one line on stderr naming the
plugin, once per process, and the built-ins keep working; its names are then unknown. What a
plugin's method returns is checked where it is called (`Registry.call`): its failures are one line
naming the plugin and the method.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Iterator

BUILT_IN = "built-in"


@dataclass
class Plugin:
    """One entry point while it loads."""
    distribution: str  # "name version": the origin of what it registers
    entry_point: str  # "group: name = value", so a warning says which of its entry points failed
    undo: list[Callable[[], None]] = field(default_factory=list)  # removes its registrations

    def __str__(self) -> str:
        return f"{self.distribution} ({self.entry_point})"


_current: Plugin | None = None


def current() -> Plugin | None:
    """The plugin whose import is running, None otherwise."""
    return _current


@contextmanager
def loading(plugin: Plugin | None) -> Iterator[None]:
    """Registrations inside belong to `plugin` (None: built-ins; nested loads restore the outer one)."""
    global _current
    outer, _current = _current, plugin
    try:
        yield
    finally:
        _current = outer


def warn(plugin: Plugin, message: str) -> None:
    print(f"certify: warning: plugin {plugin}: {message}", file=sys.stderr)


def one_line(e: BaseException) -> str:
    """`Type: message` on one line, cut short (a plugin's message can be anything)."""
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def _name(ep: EntryPoint) -> str | None:
    """The distribution's name from its metadata; None where it has none (or no distribution)."""
    try:
        name = ep.dist.metadata["Name"] if ep.dist is not None else None
    except KeyError:  # newer Pythons raise where older ones return None
        name = None
    return name if isinstance(name, str) and name.strip() else None


def _plugin(ep: EntryPoint) -> Plugin:
    name = _name(ep)
    origin = f"{name} {ep.dist.version}" if name else "an unnamed distribution"
    return Plugin(origin, f"{ep.group}: {ep.name} = {ep.value}")


def load(group: str) -> None:
    """Import every entry point of `group` (sorted, so which of two plugins wins a name is fixed).
    A distribution without a name is not imported: nothing it registered could say where it came from."""
    for ep in sorted(entry_points(group=group), key=lambda e: (_name(e) or "", e.name)):
        plugin = _plugin(ep)
        if _name(ep) is None:
            warn(plugin, "not loaded: its metadata has no Name")
            continue
        with loading(plugin):
            try:
                ep.load()
            # anything a third-party import raises, sys.exit() and KeyboardInterrupt too: a broken
            # plugin, never the end of the process; the built-ins go on
            except (Exception, SystemExit, KeyboardInterrupt) as e:
                for undo in plugin.undo:
                    undo()
                warn(plugin, f"not loaded: {one_line(e)}")
