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
values (`poison_params` etc. in the run config), built and type-checked by `certify.params.from_dict`;
`Registry.params_for(name, cfg)` does so with a run's dataset, profile and values.

A registry with an entry-point `group` also takes third-party methods (`certify/plugins.py`): after
its built-in package it imports the group's plugins, and each entry records its `origin`. Every
registration, built-in or not, meets the same contract: a free name, Params that are a dataclass
(or None) and pass the registry's own `check`. A built-in that breaks it is a bug (RuntimeError); a
plugin's registration is dropped with one warning.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from certify import plugins
from certify.errors import UserError
from certify.params import for_dataset, from_dict

CONTROL = "none"  # the poison registered as the clean control: no perturbation, every poison's clean twin


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    summary: str
    params: type | None = None  # a dataclass of the method's parameters with defaults
    kind: str = "method"  # e.g. "poison", "control"
    min_side: int = 1  # models: the smallest image height and width they train on
    recipe: tuple = ()  # models: (TrainConfig field, value) pairs a victim of this architecture trains with
    origin: str = plugins.BUILT_IN  # or the plugin's "distribution version"


@dataclass
class Registry:
    what: str  # "poison", "defense", ... used in error messages
    package: str | None = None  # modules under it are imported before the first lookup
    group: str | None = None  # entry-point group of third-party plugins, imported after `package`
    check: Callable[[type | None], str | None] | None = None  # what is wrong with a Params class, or None
    overrides: str | None = None  # the run config's mapping of the user's values per method ("poison_params")
    reserved: tuple[str, ...] = ()  # words the CLI reads as something else (`--poison all`): never a method's name
    _entries: dict[str, Entry] = field(default_factory=dict)
    _loaded: bool = False

    def register(self, name: str, summary: str, params: type | None = None, kind: str = "method",
                 min_side: int = 1, recipe: dict | None = None):
        def deco(factory):
            plugin = self._plugin_of(factory)
            problem = self._refusal(name, params, plugin)
            if problem is None:
                origin = plugin.distribution if plugin else plugins.BUILT_IN
                self._entries[name] = Entry(name, factory, summary, params, kind, min_side,
                                            tuple(sorted((recipe or {}).items())), origin)
                if plugin is not None:
                    plugin.undo.append(lambda: self._entries.pop(name, None))
            elif plugin is None:
                raise RuntimeError(f"{self.what} {name!r}: {problem}")
            else:
                plugins.warn(plugin, f"{self.what} {name!r} not registered: {problem}")
            return factory

        return deco

    def _plugin_of(self, factory) -> plugins.Plugin | None:
        """The plugin registering `factory`: None for a built-in, even one a plugin's import loads first."""
        own = self.package is not None and getattr(factory, "__module__", "").startswith(self.package + ".")
        return None if own else plugins.current()

    def _refusal(self, name: str, params: type | None, plugin: plugins.Plugin | None) -> str | None:
        """Why this registration breaks the contract, or None."""
        if plugin is not None:
            self._load()  # the built-ins first: a plugin never takes a built-in name
        if name in self.reserved:
            return f"the name is reserved (it means something else where {self.what}s are named)"
        if name in self._entries:
            return f"the name is taken ({self._entries[name].origin})"
        if params is not None and not (isinstance(params, type) and dataclasses.is_dataclass(params)):
            return f"params must be a dataclass type, got {params!r}"
        return self.check(params) if self.check is not None else None

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.package is not None:
            with plugins.loading(None):
                pkg = importlib.import_module(self.package)
                for mod in pkgutil.iter_modules(pkg.__path__):
                    if not mod.name.startswith("_"):
                        importlib.import_module(f"{self.package}.{mod.name}")
        if self.group is not None:
            plugins.load(self.group)

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

    def label(self, name: str) -> str:
        """`name` as messages say it: with its plugin's distribution where it is a plugin's."""
        origin = self.get(name).origin
        return name if origin == plugins.BUILT_IN else f"{name} (plugin {origin})"

    def call(self, name: str, step: str, *args):
        """`name`'s factory on `args` (`step` says what it is: "craft", "make"). A plugin's is behind a
        boundary: anything it raises (SystemExit and any other BaseException) is one line naming the plugin
        and the method; a built-in's exception is a bug, and its traceback is what fixes it. A user's
        Ctrl-C still stops."""
        entry = self.get(name)
        if entry.origin == plugins.BUILT_IN:
            return entry.factory(*args)
        try:
            return entry.factory(*args)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # SystemExit, GeneratorExit, a plugin's own BaseException subclass
            raise UserError(f"{self.what} {self.label(name)}: {step} failed: {plugins.one_line(e)}") from None

    def code(self, name: str) -> str:
        """A digest of the source that makes `name`'s artifacts, for cache keys: the file that defines
        it and every module of this project (`PROJECT_PACKAGES`) that file imports, transitively, so
        editing a helper makes again the artifacts of exactly the methods that import it."""
        entry = self.get(name)
        try:
            path = inspect.getsourcefile(entry.factory)
        except (TypeError, OSError):
            path = None
        if path is None:  # no source file (a compiled plugin): its version stands in
            return entry.origin
        return _code_digest(os.path.realpath(path), getattr(entry.factory, "__module__", "") or "")

    def params_for(self, name: str, cfg):
        """`name`'s parameters in a run: `params` with the run's dataset and profile and the user's
        values for it (`cfg` is a run config, or anything with `dataset`, `profile` and this
        registry's `overrides` mapping)."""
        values = getattr(cfg, self.overrides).get(name, {}) if self.overrides else None
        return self.params(name, values, dataset=cfg.dataset, profile=cfg.profile)

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
        if entry.origin == plugins.BUILT_IN:
            return _validated(cls, values, where)
        try:  # a plugin's Params (its defaults, its validate) behind the same boundary as its methods
            return _validated(cls, values, where)
        except (UserError, KeyboardInterrupt):
            raise
        except BaseException as e:
            raise UserError(f"{self.what} {self.label(name)}: parameters failed: {plugins.one_line(e)}") from None


def _validated(cls: type, values: dict, where: str):
    obj = from_dict(cls, values, where)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(where)
    return obj


# The packages whose modules a method's code digest follows (their files are this project's).
PROJECT_PACKAGES = ("attacks", "defenses", "certify")


@functools.lru_cache(maxsize=None)
def _code_digest(path: str, module: str) -> str:
    """sha256 over the module at `path` and the project modules it imports, transitively, each as
    its dotted name and its file's digest, in name order (so the digest does not depend on where
    the project lies on disk)."""
    seen: dict[str, str] = {}  # module name -> file
    todo = [(module or path, path)]
    while todo:
        name, file = todo.pop()
        if name in seen:
            continue
        seen[name] = file
        todo += [(m, f) for m, f in _project_imports(file, name) if m not in seen]
    h = hashlib.sha256()
    for name in sorted(seen):
        h.update(f"{name}\0{_file_digest(seen[name])}\n".encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _project_imports(path: str, module: str) -> tuple[tuple[str, str], ...]:
    """(module name, file) of every project module the file at `path` (module `module`) imports, at
    any depth of its code except `if TYPE_CHECKING:` blocks. `from pkg import name` counts the
    submodule `pkg.name` where there is one, else `pkg`; a package's `__init__` counts only where
    the package itself is imported."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found: dict[str, str] = {}

    def add(name: str) -> bool:
        file = _module_file(name)
        if file is not None:
            found.setdefault(name, file)
        return file is not None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parts = package.split(".") if package else []
                parts = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                if alias.name == "*" or not add(f"{base}.{alias.name}"):
                    add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return tuple(sorted(found.items()))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_file(name: str) -> str | None:
    """The source file of project module `name` (a package: its `__init__.py`), or None if `name`
    is not a module of this project's packages."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    spec = importlib.util.find_spec(parts[0])
    for root in (spec.submodule_search_locations or []) if spec else []:
        base = os.path.join(root, *parts[1:])
        for file in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(file):
                return os.path.realpath(file)
    return None


@functools.lru_cache(maxsize=None)
def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
