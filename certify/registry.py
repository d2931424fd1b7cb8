"""One small registry type: name -> factory, one-line summary, declared parameters.

Poisons, defenses, recovery attacks, datasets and models each keep one `Registry`. Methods register
themselves with a decorator in their own file; packages import their modules on first use, so
`certify list`, config validation and the tests see every method without a hand-kept list.

A method's parameter dataclass holds everything about its parameters, so a new method is one file:
the field defaults, and, as optional class attributes, its own overrides for some datasets and
profiles (a profile: `certify run --profile`):

    dataset_defaults: ClassVar[dict[str, dict]] = {"digits": {"rounds": 2}}
    profile_defaults: ClassVar[dict[str, dict]] = {"reference": {"epochs": 60}}

`Registry.params` applies field defaults <- dataset overrides <- profile overrides <- the user's
values (`poison_params` etc. in the run config), built and type-checked by `certify.params.from_dict`.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from certify.errors import UserError
from certify.params import for_dataset, from_dict


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

    def params(self, name: str, overrides: dict[str, Any] | None = None, *, dataset: str | None = None,
               profile: str | None = None):
        """The method's parameter dataclass: its defaults <- its overrides for `dataset` <- its
        overrides for `profile` <- `overrides`, type-checked and validated."""
        entry = self.get(name)
        where = f"{self.what} {name}"
        if entry.params is None:
            if overrides:
                raise UserError(f"{where} takes no parameters, got {overrides!r}")
            return None
        cls = entry.params
        if overrides is not None and not isinstance(overrides, dict):
            raise UserError(f"{where}: parameters must be a mapping, got {overrides!r}")
        values = {**(for_dataset(getattr(cls, "dataset_defaults", {}), dataset, {}) if dataset else {}),
                  **getattr(cls, "profile_defaults", {}).get(profile, {}), **(overrides or {})}
        obj = from_dict(cls, values, where)
        check = getattr(obj, "validate", None)
        if check is not None:
            check(where)
        return obj
