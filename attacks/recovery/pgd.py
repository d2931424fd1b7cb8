"""Projected-SGD weight-perturbation recovery (`pgd`; Provably Unlearnable Data Examples, 2024).

From theta_ue, minimise the cross-entropy on the attacker's clean set D_r subject to
||theta - theta_ue||_2 <= eta (all trainable parameters flattened), projecting after every SGD step;
report the clean test accuracy of the result for each eta. Each eta works on its own deep copy
(the given model is never changed) with its own seed derived from (seed, eta), so a result does
not depend on the rest of the grid.

- constraint `ball` (default): rescale onto the sphere only when outside; `sphere`: always rescale
  to ||theta - theta_ue|| = eta (the reference code).
- bn `frozen` (default, a pure weight-space attack): the model is in eval mode while it trains, so
  BatchNorm normalises with theta_ue's running statistics and never moves them; `re-estimated`:
  train mode, the running statistics re-estimate on D_r (the reference code).
- Defaults are the CPU-sized `quick` profile (3 epochs); `profile_defaults` holds the published
  settings (60 epochs, SGD lr 0.01, momentum 0.9, wd 5e-4, cosine, batch 128) for `--profile reference`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from attacks.recovery import RECOVERY, RecoveryInputs
from attacks.recovery._common import BN_MODES, CONSTRAINTS, project_
from certify.errors import UserError
from certify.seeding import derive
from certify.models import trainable
from certify.training import evaluate
from certify.validation import check_choice, check_nonnegative, check_positive

@dataclass
class PGDRecoveryParams:
    """Quick profile: 3 epochs; reference: 60 epochs (SGD 0.01, momentum 0.9, wd 5e-4, cosine, batch 128)."""
    profile_defaults: ClassVar[dict[str, dict]] = {"reference": {"epochs": 60}}
    epochs: int = 3
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch: int = 128
    constraint: str = "ball"
    bn: str = "frozen"

    def validate(self, where: str) -> None:
        for name, v in (("epochs", self.epochs), ("batch", self.batch)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{where}: {name} must be an integer >= 1, got {v!r}")
        check_positive(where, lr=self.lr)
        check_nonnegative(where, momentum=self.momentum, weight_decay=self.weight_decay)
        check_choice(where, "constraint", self.constraint, CONSTRAINTS)
        check_choice(where, "bn", self.bn, BN_MODES)


def recover_one(model: nn.Module, x_attack: torch.Tensor, y_attack: torch.Tensor, eta: float,
                p: PGDRecoveryParams, seed: int) -> nn.Module:
    """A recovered deep copy of `model` within eta of it (its own seed: use `derive(seed, ...)`)."""
    m = copy.deepcopy(model)
    device = next(m.parameters()).device
    origin = {n: t.clone() for n, t in trainable(m).items()}
    params = [q for n, q in m.named_parameters() if n in origin]
    m.train(p.bn == "re-estimated")
    if len(x_attack) == 0 or eta == 0:
        return m.eval()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    steps = -(-len(x_attack) // p.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs * steps)
    for _ in range(p.epochs):
        order = torch.randperm(len(x_attack), generator=gen)
        for i in range(0, len(x_attack), p.batch):
            idx = order[i:i + p.batch]
            if p.bn == "re-estimated" and len(idx) < 2:
                continue  # train-mode BatchNorm needs two images
            loss = F.cross_entropy(m(x_attack[idx].to(device)), y_attack[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            project_(m, origin, eta, p.constraint)
    return m.eval()


@RECOVERY.register("pgd", "projected SGD on the attacker's clean set within ||theta - theta_ue|| <= eta",
                   PGDRecoveryParams)
def recover(inputs: RecoveryInputs, params: PGDRecoveryParams) -> list[dict]:
    """[{"eta", "accuracy" (clean test accuracy of the recovered model), "attacker_accuracy" (its
    accuracy on the attacker's own set D_r: what the attacker can choose η by)}] in the order of `etas`."""
    out = []
    for eta in inputs.etas:
        m = recover_one(inputs.model, inputs.x_attack, inputs.y_attack, eta, params,
                        derive(inputs.seed, "recovery", "pgd", repr(eta)))
        out.append({"eta": eta, "accuracy": evaluate(m, inputs.x_test, inputs.y_test),
                    "attacker_accuracy": evaluate(m, inputs.x_attack, inputs.y_attack) if len(inputs.x_attack) else 0.0})
    return out
