"""Greedy random-search recovery (`greedy`; Provably Unlearnable Data Examples, 2024).

For each eta: `trials` random perturbations theta_ue + scale * N(0, I) over all trainable
parameters, each rescaled to norm exactly eta (so `scale` only fixes the direction's law; kept for
fidelity to the reference), are scored on the attacker's clean set D_r (never the test set); the
best one's clean test accuracy is reported. BatchNorm statistics stay theta_ue's (eval mode).
Trial t's direction depends only on (seed, t), so every eta sees the same directions.
Defaults are the CPU-sized `quick` profile (100 trials); `profile_defaults` holds the published 1000.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call

from attacks.recovery import RECOVERY, RecoveryInputs
from attacks.recovery._common import distance
from certify.errors import UserError
from certify.seeding import generator
from certify.models import trainable
from certify.validation import check_positive

@dataclass
class GreedyRecoveryParams:
    """Quick profile: 100 trials; reference: 1000 trials of theta_ue + 1.25 N(0, I) rescaled to eta."""
    profile_defaults: ClassVar[dict[str, dict]] = {"reference": {"trials": 1000}}
    trials: int = 100
    scale: float = 1.25
    eval_batch: int = 1000
    bn: ClassVar[str] = "frozen"
    constraint: ClassVar[str] = "sphere"

    def validate(self, where: str) -> None:
        for name, v in (("trials", self.trials), ("eval_batch", self.eval_batch)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{where}: {name} must be an integer >= 1, got {v!r}")
        check_positive(where, scale=self.scale)


def direction(params: dict[str, torch.Tensor], scale: float, seed: int, t: int) -> dict[str, torch.Tensor]:
    """Trial t's perturbation scale * N(0, I), drawn on the CPU from (seed, t)."""
    g = generator(seed, "recovery", "greedy", t)
    return {n: scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for n, p in params.items()}


def perturb(origin: dict[str, torch.Tensor], d: dict[str, torch.Tensor], eta: float) -> dict[str, torch.Tensor]:
    """origin + d rescaled to norm eta."""
    norm = distance(d, {n: torch.zeros_like(t) for n, t in d.items()})
    f = eta / norm if norm > 0 else 0.0
    return {n: origin[n] + f * d[n] for n in origin}


@torch.inference_mode()
def _accuracy(m: nn.Module, state, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    device = next(m.parameters()).device
    correct = 0
    for i in range(0, len(x), batch):
        pred = functional_call(m, state, (x[i:i + batch].to(device),)).argmax(-1).cpu()
        correct += int((pred == y[i:i + batch]).sum())
    return correct / max(1, len(x))


def search(model: nn.Module, x_attack, y_attack, etas: list[float], p: GreedyRecoveryParams, seed: int):
    """For each eta the best trial's weights and its attacker-set accuracy: [(weights, acc)]."""
    m = copy.deepcopy(model).eval()
    origin = {n: t.clone() for n, t in trainable(m).items()}
    buffers = {n: b.detach() for n, b in m.named_buffers()}
    best = [(dict(origin), -1.0) for _ in etas]
    for t in range(p.trials):
        d = direction(origin, p.scale, seed, t)
        for i, eta in enumerate(etas):
            w = perturb(origin, d, eta)
            acc = _accuracy(m, (w, buffers), x_attack, y_attack, p.eval_batch)
            if acc > best[i][1]:
                best[i] = (w, acc)
    return m, buffers, best


@RECOVERY.register("greedy", "best of N random weight perturbations of norm eta, chosen on the "
                   "attacker's clean set", GreedyRecoveryParams)
def recover(inputs: RecoveryInputs, params: GreedyRecoveryParams) -> list[dict]:
    """[{"eta", "accuracy" (test, of the best trial), "attacker_accuracy"}] in the order of `etas`."""
    m, buffers, best = search(inputs.model, inputs.x_attack, inputs.y_attack, inputs.etas, params, inputs.seed)
    return [{"eta": eta, "accuracy": _accuracy(m, (w, buffers), inputs.x_test, inputs.y_test, params.eval_batch),
             "attacker_accuracy": acc} for eta, (w, acc) in zip(inputs.etas, best)]
