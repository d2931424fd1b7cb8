"""What every stage of one run shares, and the one helper that turns a stage into a cached task.

`RunContext.cached(kind, spec, fn, inputs)` adds a task to the run's graph whose artifact is keyed
by `kind`, `spec` (exactly the settings that determine it), the keys of its inputs, the model, the
device and the task's thread count. Stages never build keys or touch the cache themselves.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch
from torch import nn

from certify.cache import Cache, key_of
from certify.graph import Graph, Task
from certify.models import MODELS, build_model

if TYPE_CHECKING:  # the config composes the slices' sections, and the slices use this module
    from certify.config import RunConfig
    from certify.data import Dataset


@functools.lru_cache(maxsize=None)
def model_code(arch: str) -> str:
    """A digest of `arch`'s definition and of the training loop (each with the project modules it
    imports), as `Registry.code` makes for a method."""
    from certify import training
    from certify.registry import _code_digest

    return MODELS.code(arch) + _code_digest(os.path.realpath(training.__file__), training.__name__)


@dataclass(frozen=True)
class ModelSpec:
    """The run's architecture for its data: small and picklable, so tasks build models where they run."""
    arch: str
    shape: tuple[int, ...]
    classes: int

    def build(self, seed: int, device: torch.device | str = "cpu") -> nn.Module:
        return build_model(self.arch, self.shape, self.classes, seed).to(device)

    def load(self, state: dict, device: torch.device | str = "cpu") -> nn.Module:
        model = self.build(0, device)
        model.load_state_dict(state)
        return model.eval()

    def key(self) -> dict:
        # the code that defines and trains the model is keyed too: a change to either (a memory layout
        # that rounds differently, say) makes the models again instead of mixing old and new weights
        return {"arch": self.arch, "shape": list(self.shape), "classes": self.classes, "code": model_code(self.arch)}

    def of(self, arch: str) -> ModelSpec:
        """The same data's spec for another architecture."""
        return ModelSpec(arch, self.shape, self.classes)


def task_device(kind: str) -> torch.device:
    """Where a task computes: CUDA when the run is keyed for it and this process has it (a logical
    GPU of a CPU-only Ray node runs on the CPU)."""
    return torch.device("cuda" if kind == "cuda" and torch.cuda.is_available() else "cpu")


def images(x: torch.Tensor) -> torch.Tensor:
    """Released images as float32 in [0, 1] (crafted releases are stored as 8-bit)."""
    return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x


class Viewed(NamedTuple):
    """An input seen through `view`: the task's key hashes the artifact's `key` (so a key does not
    change with how its tasks read the artifact), and the task receives `view(artifact)`, a plain
    value (the run's σ: `certificate.sigma_input`)."""
    key: str
    view: Callable[[Any], Any]


def _viewing(fn: Callable[..., dict], views: tuple, *inputs, **args) -> dict:
    """`fn` called with each input seen through its view (None: as it is); runs where the task runs."""
    return fn(*(v(x) if v is not None else x for v, x in zip(views, inputs)), **args)


@dataclass
class RunContext:
    cfg: RunConfig
    data: Dataset
    cache: Cache
    model: ModelSpec
    device: str  # "cpu" | "cuda": the kind of device tasks compute on (part of every key)
    data_key: str  # the graph's constant holding `data`
    test_digest: str
    graph: Graph = field(default_factory=Graph)
    replicate: int = 0  # which replicate seed this context runs (`replicates.contexts`); 0: the run's first

    def cached(self, kind: str, spec: dict, fn: Callable[..., dict], inputs: tuple[str | Viewed, ...] = (), *,
               poison: str | None = None, defense: str | None = None, threads: int | None = None,
               accept: Callable[[dict], bool] | None = None, quiet: bool = False,
               unkeyed: dict | None = None, stage: str | None = None, code: str | None = None,
               cpu_only: bool = False, model: ModelSpec | None = None) -> str:
        """Add the task that makes artifact `kind` from `inputs` (keys) with
        `fn(*inputs, **spec, model=..., device=...)`; return its key. `spec` is both what `fn` is
        called with and what the key hashes (dataclasses hash by their repr: every field).
        `unkeyed` arguments do not change the artifact (a progress label, say); `stage` names the
        task in progress and records (default: `kind`); `code` (a method's source digest,
        `Registry.code`: its file and the project modules it imports) is hashed into the key only,
        so a changed method or helper makes its artifacts again. A `cpu_only` task computes on the
        CPU wherever it runs: it reserves no GPU, and is keyed (and called) with device "cpu". An input
        given as `Viewed(key, view)` is keyed by `key` and reaches `fn` as `view(artifact)`. `model`: the
        architecture the task trains when it is not the run's (a victim of the panel)."""
        views = tuple(i.view if isinstance(i, Viewed) else None for i in inputs)
        inputs = tuple(i.key if isinstance(i, Viewed) else i for i in inputs)
        if any(v is not None for v in views):
            fn = functools.partial(_viewing, fn, views)
        threads = self.cfg.threads if threads is None else threads
        device = "cpu" if cpu_only else self.device
        model = model or self.model
        key = key_of(kind, {"spec": spec, "inputs": list(inputs), "model": model.key(),
                            "device": device, "threads": threads, **({"code": code} if code else {})})
        args = {**spec, **(unkeyed or {}), "model": model, "device": device}
        return self.graph.add(Task(key, stage or kind, fn, tuple(inputs), args, poison, defense, threads,
                                   0.0 if cpu_only else self.cfg.gpu_fraction, accept, quiet))


class Slice(NamedTuple):
    """One stage of an evaluation, as every slice offers it (listed in `certify.slices.SLICES`).

    `keys` is one poison's plan: what the caller gave (`name`, the label its tasks and report section
    carry; optionally `poison`, the registry name when it differs, `params`, `release`, `head`),
    the run-level keys and the keys the earlier slices added (release, victim, sigma, surrogate, ...).

      run(ctx, keys) -> dict              run-level tasks, once per replicate (the clean model, σ, the
                                          independent model): the keys they add (None: none)
      add(ctx, keys) -> dict              this slice's tasks for one poison: the keys they add
      section(ctx, keys, values) -> dict  the report fields it contributes to that poison's section,
                                          from the artifacts (`values`, by key) of one replicate
    """
    name: str
    add: Callable[[RunContext, dict], dict]
    section: Callable[[RunContext, dict, dict], dict]
    run: Callable[[RunContext, dict], dict] | None = None
