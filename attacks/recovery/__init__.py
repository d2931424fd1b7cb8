"""Weight-perturbation recovery attacks (Provably Unlearnable Data Examples, 2024): one file each.

An attack is one call `factory(inputs: RecoveryInputs, params) -> curve`, registered in `RECOVERY`
with its parameter dataclass; the curve is [{"eta", "accuracy", ...}] in the order of `inputs.etas`.
The attacker holds theta_ue and a small clean labelled set D_r, disjoint from the test set:
`attacker_split` draws it as a seeded stratified fraction (default 20 %) of the clean training split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from attacks.recovery._common import BN_MODES, CONSTRAINTS
from certify.certificate.config import MAX_ETA_SIGMA
from certify.errors import UserError
from certify.registry import Registry
from certify.seeding import derive, stratified_draw
from certify.validation import check_at_most, check_open_unit, check_positive


def params_problem(params: type | None) -> str | None:
    """The report states each attack's BN mode and constraint: its Params must declare both."""
    for attr, allowed in (("bn", BN_MODES), ("constraint", CONSTRAINTS)):
        if getattr(params, attr, None) not in allowed:
            return f"params must declare {attr} as one of {', '.join(allowed)} (a field or ClassVar)"
    return None


RECOVERY = Registry("recovery attack", package="attacks.recovery", group="certify.recovery", check=params_problem,
                    overrides="recovery_params")


@dataclass
class RecoveryConfig:
    """The run's `recovery` section: which attacks, at which radii, with how much clean data."""
    methods: list[str] = field(default_factory=lambda: ["pgd"])
    # eta relative to sigma: covers the certificate's grid and continues past it to show where
    # protection breaks
    eta_sigma: list[float] = field(default_factory=lambda: [0.5, 1.5, 5.0, 20.0])
    attacker_fraction: float = 0.2  # of the clean training split; disjoint from the test set

    def validate(self, where: str) -> None:
        for m in self.methods:
            RECOVERY.get(m)
        if not self.eta_sigma:
            raise UserError(f"{where}: recovery.eta_sigma must list at least one value")
        for v in self.eta_sigma:
            check_positive(where, **{"recovery.eta_sigma": v})
            check_at_most(where, MAX_ETA_SIGMA, **{"recovery.eta_sigma": v})
        check_open_unit(where, **{"recovery.attacker_fraction": self.attacker_fraction})


@dataclass(frozen=True, eq=False)  # eq=False: tensors compare by identity
class RecoveryInputs:
    """What every recovery attack is given. `etas` are checked (finite, >= 0) and kept as floats."""
    model: nn.Module  # theta_ue, the start; attacks work on copies and never change it
    x_attack: torch.Tensor  # the attacker's clean set D_r
    y_attack: torch.Tensor
    x_test: torch.Tensor  # only for the reported accuracy, never for choosing weights
    y_test: torch.Tensor
    etas: tuple[float, ...]  # l2 radii over all trainable parameters flattened
    seed: int

    def __post_init__(self) -> None:
        for e in self.etas:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
                raise UserError(f"recovery: every eta must be a finite number >= 0, got {e!r}")
        object.__setattr__(self, "etas", tuple(float(e) for e in self.etas))


def attacker_split(x: torch.Tensor, y: torch.Tensor, fraction: float = 0.2, seed: int = 0):
    """A seeded, stratified `fraction` of (x, y), in source order."""
    if not 0 < fraction <= 1:
        raise UserError(f"recovery: attacker fraction must be in (0, 1], got {fraction!r}")
    keep, _ = stratified_draw(y, float(fraction), derive(seed, "recovery", "attacker-split"),
                              "recovery.attacker_fraction")
    return x[keep], y[keep]
