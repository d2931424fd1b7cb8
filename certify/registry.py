"""One small registry type: name -> factory, one-line summary, declared parameters.

Poisons, defenses, recovery attacks, datasets and models each keep one `Registry`. Methods register
themselves with a decorator in their own file; packages import their modules on first use, so
`certify list`, config validation and the tests see every method without a hand-kept list.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from certify.errors import UserError


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    summary: str
    params: type | None = None  # a dataclass of the method's parameters with defaults
    kind: str = "method"  # e.g. "poison", "control"
    min_side: int = 1  # models: the smallest image height and width they train on


@dataclass
class Registry:
    what: str  # "poison", "defense", ... used in error messages
    package: str | None = None  # modules under it are imported before the first lookup
    _entries: dict[str, Entry] = field(default_factory=dict)
    _loaded: bool = False

    def register(self, name: str, summary: str, params: type | None = None, kind: str = "method",
                 min_side: int = 1):
        def deco(factory):
            if name in self._entries:
                raise RuntimeError(f"{self.what} {name!r} registered twice")
            self._entries[name] = Entry(name, factory, summary, params, kind, min_side)
            return factory

        return deco

    def _load(self) -> None:
        if self._loaded or self.package is None:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self._load()
        return [self._entries[n] for n in sorted(self._entries)]

    def get(self, name: str) -> Entry:
        self._load()
        if name not in self._entries:
            raise UserError(f"unknown {self.what} {name!r}; choose from: {', '.join(self.names())}")
        return self._entries[name]

    def params(self, name: str, overrides: dict[str, Any] | None = None):
        """The method's parameter dataclass with overrides applied and validated."""
        entry = self.get(name)
        overrides = {} if overrides is None else overrides
        if not isinstance(overrides, dict):  # from YAML: anything
            raise UserError(f"{self.what} {name}: parameters must be a mapping of names to values, "
                            f"got {type(overrides).__name__}")
        if entry.params is None:
            if overrides:
                raise UserError(f"{self.what} {name!r} takes no parameters (got {', '.join(map(str, overrides))})")
            return None
        return build_params(entry.params, overrides, f"{self.what} {name}")


def build_params(cls: type, values: dict[str, Any], where: str):
    """Instantiate dataclass `cls` from `values`, naming any unknown key or bad value."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields), key=str)  # YAML keys need not be strings
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(fields))}")
    try:
        obj = cls(**values)
    except TypeError as e:
        raise UserError(f"{where}: {e}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        check(where)
    return obj
