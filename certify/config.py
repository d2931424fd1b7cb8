"""Run configuration: dataclasses, YAML (safe_load), CLI overrides, validation, per-dataset defaults.

Precedence: built-in defaults <- per-dataset defaults <- profile (`--profile`) <- YAML file <-
command-line flags.
Every value is checked on load; an unknown key or a bad value is one line naming the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from attacks.recovery import RECOVERY, RecoveryConfig
from certify.certificate.config import CertificateConfig
from certify.errors import UserError
from certify.files import read_small_text
from certify.params import for_dataset, from_dict
from certify.scores.mutual_info import MIConfig
from certify.scores.sal_ud import SalConfig
from certify.training import TrainConfig
from certify.validation import MAX_THREADS, check_at_most, check_choice, check_positive
from certify.verdict import MINIMUM_SUITE, VerdictConfig

STAGES = ("certify", "scores", "recovery")
MAX_SEEDS = 20  # replicates of one run: each one repeats the whole run's work
MAX_VICTIMS = 8  # architectures of a victim panel: each trains on every release under every defense
MAX_CONNECT_TIMEOUT = 86_400  # seconds: a day; far past it, the socket's own timeout overflows time_t


@dataclass
class RunConfig(CertificateConfig):
    """The run: data, model, execution, and each slice's section (the certificate's fields come from
    `CertificateConfig`, flat in YAML as before)."""
    poisons: list[str] = field(default_factory=lambda: ["miue"])
    dataset: str = "cifar10-mini"
    test: Union[str, None] = None
    image_size: Union[int, None] = None  # --image-size S: every image resized to S×S (shorter side, centre crop)
    data_root: Union[str, None] = None
    download: bool = False
    model: str = "cnn"  # the architecture (`certify list`); a dataset's row of DATASET_DEFAULTS may name another
    # the verdict's minimum suite, so that a default run can read strong (`--defense ''` skips it)
    # the victim panel (--victims): architectures that train on every release, on the clean data and
    # under each defense; empty: the crafting model alone (certify/panel.py)
    victims: list[str] = field(default_factory=list)
    victim_train: dict[str, dict] = field(default_factory=dict)  # per-architecture TrainConfig overrides
    defenses: list[str] = field(default_factory=lambda: list(MINIMUM_SUITE.defenses))
    out: Union[str, None] = None
    cache_dir: Union[str, None] = None
    seed: int = 0
    seeds: int = 1  # replicates: replicate i runs every seeded choice at seed + i (see certify/replicates.py)
    threads: int = 1  # torch threads of each training, crafting and scoring task (part of cache keys)
    executor: str = "ray"
    workers: Union[int, None] = None  # CPUs of the local Ray instance (None: every core); not used with address
    address: Union[str, None] = None
    gpu_fraction: float = 0.25  # of a GPU per GPU-capable task, where the cluster has GPUs
    connect_timeout: float = 60.0  # seconds to wait for the cluster at `address`
    skip: list[str] = field(default_factory=list)
    profile: str = "quick"
    baseline: bool = True
    resume: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    sal: SalConfig = field(default_factory=SalConfig)
    mi: MIConfig = field(default_factory=MIConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)  # the thresholds of each poison's verdict
    poison_params: dict[str, dict] = field(default_factory=dict)  # per-poison parameter overrides
    defense_params: dict[str, dict] = field(default_factory=dict)  # per-defense parameter overrides
    recovery_params: dict[str, dict] = field(default_factory=dict)  # per-recovery-attack overrides

    def validate(self, where: str = "config") -> None:
        if not self.poisons:
            raise UserError(f"{where}: poisons must name at least one poison")
        self.validate_certificate(where)
        check_positive(where, seeds=self.seeds)
        check_at_most(where, MAX_SEEDS, seeds=self.seeds)
        check_choice(where, "executor", self.executor, ("ray", "serial"))
        check_positive(where, threads=self.threads)
        check_at_most(where, MAX_THREADS, threads=self.threads)
        if self.workers is not None:
            check_positive(where, workers=self.workers)
            check_at_most(where, MAX_THREADS, workers=self.workers)
            if self.threads > self.workers or self.smoothing.threads > self.workers:
                raise UserError(f"{where}: threads ({self.threads}) and smoothing.threads "
                                f"({self.smoothing.threads}) must not exceed workers ({self.workers}): "
                                "a task asks for one CPU per thread")
        check_positive(where, connect_timeout=self.connect_timeout)
        check_at_most(where, MAX_CONNECT_TIMEOUT, connect_timeout=self.connect_timeout)
        if self.image_size is not None:
            from certify.data._common import MAX_SIDE

            check_positive(where, image_size=self.image_size)
            check_at_most(where, MAX_SIDE, image_size=self.image_size)
        if not 0 < self.gpu_fraction <= 1:
            raise UserError(f"{where}: gpu_fraction must be in (0, 1], got {self.gpu_fraction!r}")
        for s in self.skip:
            check_choice(where, "skip", s, STAGES)
        check_choice(where, "profile", self.profile, ("quick", "reference"))
        from certify.models import MODELS

        MODELS.get(self.model)
        for arch in self.victims:
            MODELS.get(arch)
        check_at_most(where, MAX_VICTIMS, **{"number of victims": len(self.victims)})
        for arch in self.victim_train:
            self.victim_training(arch, f"{where}: victim_train.{arch}")
        from defenses.base import DEFENSES

        for name in self.defenses:
            DEFENSES.get(name)
        for field_name in ("poisons", "defenses", "victims"):  # a name twice would run (or report) it once, silently
            names = getattr(self, field_name)
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise UserError(f"{where}: {field_name} names {', '.join(twice)} more than once")
        self.train.validate(f"{where}: train")
        self.sal.validate(where)
        self.mi.validate(where)
        self.recovery.validate(where)
        self.verdict.validate(where)
        from attacks.base import POISONS

        for registry in (POISONS, DEFENSES, RECOVERY):
            for name in getattr(self, registry.overrides):
                registry.params_for(name, self)

    def panel(self) -> list[str]:
        """The victim architectures, in the user's order (the crafting model alone by default)."""
        return list(self.victims) or [self.model]

    def victim_training(self, arch: str, where: str = "config") -> TrainConfig:
        """How a victim of `arch` trains: the crafting model with `train`; any other with its
        architecture's recipe on top (certify/models.py), then `victim_train.ARCH`."""
        from certify.models import MODELS, victim_training

        overrides = self.victim_train.get(arch) or {}
        if not isinstance(overrides, dict):
            raise UserError(f"{where} must be a mapping of training fields to values, got {overrides!r}")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)})
        if unknown:
            raise UserError(f"{where}: unknown field {unknown[0]!r} (allowed: "
                            f"{', '.join(f.name for f in dataclasses.fields(TrainConfig))})")
        MODELS.get(arch)  # a recipe for an architecture not in this run's panel is kept for the next one
        if arch == self.model:
            if overrides:
                raise UserError(f"{where}: {arch!r} is the crafting model (--model), which trains with `train`; "
                                "set `train` instead")
            return self.train
        training = victim_training(arch, self.train, overrides)
        training.validate(where)
        return training


# Per-dataset defaults of the run. Keys are RunConfig fields (nested dicts for sections); a method's
# own per-dataset and per-profile parameters live on its parameter class (certify/registry.py).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10-mini": {
        "train": {"epochs": 15, "batch_size": 128, "lr": 0.05, "flip": True},
    },
    # digits: the fast dataset for tests and smoke runs (plumbing, not protection); each
    # model-based poison declares its smallest schedule for it (`dataset_defaults`)
    "digits": {
        "train": {"epochs": 15, "batch_size": 64, "lr": 0.05, "flip": False},
    },
    "mnist": {
        "train": {"epochs": 8, "batch_size": 128, "lr": 0.05, "flip": False},
    },
}
GENERIC_DEFAULTS: dict[str, Any] = {"train": {"flip": True}}

# `--profile reference` follows the published solver settings; `quick` (the default) is sized for a CPU.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    # SAL on a 500-image stratified subset, 3 projected-gradient steps per side, every 5th epoch
    "quick": {"sal": {"subset": 500, "steps": 3, "every": 5}},
    "reference": {
        # the reference's surrogate training (what still differs: certify/certificate/surrogate.py)
        "surrogate": {"levels": 6, "init": "scratch", "epochs": 60, "step": "per-level", "draws_per_level": 10,
                      "grad_clip": 5.0},
        "sal": {"method": "reference", "subset": 0},
        "recovery": {"methods": ["pgd", "greedy"]},  # each with its own `profile_defaults`
    },
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


MAX_CONFIG_BYTES = 2**18  # a configuration is a few hundred bytes; PyYAML builds values at ~150 kB a second


def _read_text(path: str) -> str:
    return read_small_text(path, MAX_CONFIG_BYTES, "config file")


def read_yaml(path: str) -> dict:
    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"config file {path}: malformed YAML{where}") from None
    except RecursionError:
        raise UserError(f"config file {path}: nested too deeply") from None
    except ValueError as e:  # Python's own limits while building a value: an int of 4301+ digits, a 13th month
        raise UserError(f"config file {path}: unreadable value ({str(e).split(';')[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: the top level must be a mapping of keys to values")
    return data


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """defaults <- dataset defaults <- profile defaults <- YAML <- overrides (flags), validated."""
    file_values = read_yaml(path) if path else {}
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    dataset = flags.get("dataset", file_values.get("dataset", RunConfig.dataset))
    if not isinstance(dataset, str):
        raise UserError(f"config: dataset must be a string, got {dataset!r}")
    profile = flags.get("profile", file_values.get("profile", RunConfig.profile))
    if not isinstance(profile, str) or profile not in PROFILE_DEFAULTS:  # a list is not hashable
        raise UserError(f"config: profile must be one of {', '.join(PROFILE_DEFAULTS)}, got {profile!r}")
    base = for_dataset(DATASET_DEFAULTS, dataset, GENERIC_DEFAULTS)
    merged = _merge(_merge(_merge(base, PROFILE_DEFAULTS[profile]), file_values), flags)
    cfg = from_dict(RunConfig, merged)
    cfg.validate()
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
