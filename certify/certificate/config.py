"""The certificate's own section of the run configuration: draws, sigma, q, alpha, the eta grid,
coverage, how draws are evaluated (`smoothing`) and the surrogate they perturb (`surrogate`).

Its fields sit at the top level of the YAML file and the flags (`samples`, `sigma`, ...), as before;
`RunConfig` inherits them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from certify.errors import UserError
from certify.validation import (MAX_EPOCHS, MAX_THREADS, check_at_least, check_at_most, check_choice,
                                check_nonnegative, check_open_unit, check_positive)

SIGMA_GRID = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25)  # what `--sigma auto` scans, upward
# Limits (README, "Limits"): valid but absurd values are refused before any work.
MAX_SAMPLES = 10**7  # draws (samples, smoothing.chunk, smoothing.sigma_draws): each is a pass over the test set
# Below SIGMA_MIN the float32 weights (epsilon 1.2e-7) round most of the noise away; far below it
# (sigma < 2.2e-308) the report's eta/sigma axis overflows. Above SIGMA_MAX the noise swamps any
# trained weight, and by 1e30 the surrogate's norm overflows to NaN after the whole run.
SIGMA_MIN, SIGMA_MAX = 1e-6, 100.0
# q_bar = Phi(Phi^-1(q) + eta/sigma) is 1.0 in float64 for every q once eta/sigma passes 47
# (Phi^-1 of the smallest double is -38.5; Phi is 1.0 above 8.3): past that every eta gives
# the same q_bar (the recovery grid shares the limit).
MAX_ETA_SIGMA = 100.0
MAX_LEVELS = 1000  # surrogate.levels, surrogate.draws_per_level: each RWP step runs levels x draws passes
MAX_INDEPENDENT_MODELS = 20  # independent_models: each is one more full training per release (as a replicate seed is a whole run)


@dataclass
class SurrogateConfig:
    kind: str = "rwp"  # rwp | standard
    # victim: fine-tune the model trained normally on the same data (its training is the plain
    # phase); scratch: train a fresh model, RWP switched on after switch_fraction of the epochs
    init: str = "victim"
    levels: int = 3  # RWP noise levels linspace(0, sigma, levels); the reference profile uses 6
    epochs: int = 3  # fine-tuning epochs from the victim, or the whole training from scratch
    switch_fraction: float = 0.2  # scratch only
    draws_per_level: int = 1
    # mean: one optimizer step on the loss averaged over all levels; per-level: one step per level
    # (each on its draws' mean loss / levels), as the reference does
    step: str = "mean"
    grad_clip: float = 0.0  # clip every step's gradient to this l2 norm (0: off; the reference 5.0)

    def validate(self, where: str) -> None:
        check_choice(where, "surrogate.kind", self.kind, ("rwp", "standard"))
        check_choice(where, "surrogate.init", self.init, ("victim", "scratch"))
        check_choice(where, "surrogate.step", self.step, ("mean", "per-level"))
        check_nonnegative(where, **{"surrogate.grad_clip": self.grad_clip})
        check_positive(where, **{"surrogate.levels": self.levels, "surrogate.epochs": self.epochs,
                                 "surrogate.draws_per_level": self.draws_per_level})
        check_at_most(where, MAX_LEVELS, **{"surrogate.levels": self.levels,
                                            "surrogate.draws_per_level": self.draws_per_level})
        check_at_most(where, MAX_EPOCHS, **{"surrogate.epochs": self.epochs})
        check_nonnegative(where, **{"surrogate.switch_fraction": self.switch_fraction})


@dataclass
class SmoothingConfig:
    eval_batch: int = 250  # images per forward pass of one draw (cache-sized; measured fastest)
    chunk: int = 50  # draws per work unit (checkpointed and resumed as a whole)
    threads: int = 1  # torch threads per evaluator (serial and each Ray worker alike)
    sigma_draws: int = 50  # draws per sigma for the auto rule (their own seed stream)
    sigma_ratio: float = 0.8  # auto rule: median accuracy >= ratio * unperturbed accuracy

    def validate(self, where: str) -> None:
        check_positive(where, **{"smoothing.eval_batch": self.eval_batch, "smoothing.chunk": self.chunk,
                                 "smoothing.threads": self.threads, "smoothing.sigma_draws": self.sigma_draws})
        check_at_most(where, MAX_SAMPLES, **{"smoothing.chunk": self.chunk, "smoothing.sigma_draws": self.sigma_draws})
        check_at_most(where, MAX_THREADS, **{"smoothing.threads": self.threads})
        check_open_unit(where, **{"smoothing.sigma_ratio": self.sigma_ratio})


@dataclass
class CertificateConfig:
    samples: int = 1000
    sigma: Union[float, str] = "auto"
    q: float = 0.9
    alpha: float = 0.01
    eta_sigma: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25, 0.5, 1.0, 1.5])
    coverage: str = "per-eta"
    # independently trained victims per release whose distance to the surrogate is set against the
    # certified eta (the report's `certificate.independent_models`); 0: none trained
    independent_models: int = 5
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)

    def validate_certificate(self, where: str) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise UserError(f"{where}: samples must be a positive integer, got {self.samples!r}")
        check_at_most(where, MAX_SAMPLES, samples=self.samples)
        if isinstance(self.sigma, str):
            if self.sigma != "auto":
                raise UserError(f"{where}: sigma must be a positive number or 'auto', got {self.sigma!r}")
        else:
            check_positive(where, sigma=self.sigma)
            check_at_least(where, SIGMA_MIN, sigma=self.sigma)
            check_at_most(where, SIGMA_MAX, sigma=self.sigma)
        check_open_unit(where, q=self.q, alpha=self.alpha)
        if not self.eta_sigma:
            raise UserError(f"{where}: eta_sigma must list at least one value")
        for v in self.eta_sigma:
            check_nonnegative(where, eta_sigma=v)
            check_at_most(where, MAX_ETA_SIGMA, eta_sigma=v)
        check_choice(where, "coverage", self.coverage, ("per-eta", "bonferroni"))
        if isinstance(self.independent_models, bool) or not isinstance(self.independent_models, int) or self.independent_models < 0:
            raise UserError(f"{where}: independent_models must be a non-negative integer, got {self.independent_models!r}")
        check_at_most(where, MAX_INDEPENDENT_MODELS, independent_models=self.independent_models)
        self.surrogate.validate(where)
        self.smoothing.validate(where)
