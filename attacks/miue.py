"""MI-UE (Zhu, Miao, Dong, Gao, ICLR 2026): unlearnable examples that lower the mutual information
between clean and poisoned features by pulling same-class penultimate features together.

Bi-level, fixed rounds, no early stop. Each round: train the crafting model one epoch on (x + δ, y)
with cross-entropy (SGD with MI-UE's own lr and weight decay and the run's momentum and batch size,
cosine-annealed over all rounds); then, in eval mode, K signed-gradient *descent* steps on
L = L_sim + ζ·L_dist over every batch of the (seeded, shuffled) data, with the step α_t rising
linearly from `step_start` (first round) to `step_end` (last round).

The only augmentation, in both steps, is the reference's post-augmentation (`augment`): a random
horizontal flip of the clean image, to which the *unflipped* δ is added, flip(x) + δ.

Remaining differences from the reference: the CPU default `quick` runs fewer rounds and steps with
larger α (MIUEParams; `--profile reference` runs the published 100 rounds of 10 steps); the crafting model is the run's architecture with the run's momentum and
batch size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from attacks.base import POISONS, CraftContext, PoisonParams, release, sign_step
from attacks._common import BatchStream, batches, check_int_positive, crafting_model, model_step
from certify.progress import progress
from certify.seeding import derive
from certify.training import flip_crop
from certify.validation import check_nonnegative, check_positive


@dataclass
class MIUEParams(PoisonParams):
    """MI-UE, l-inf.

    Published (CIFAR-10, ResNet-18): eps 8/255, 100 rounds x (1 epoch of CE training, batch 128,
    SGD lr 0.1 cosine, momentum 0.9, wd 1e-4) + K = 10 signed steps per batch of 512,
    α 0.2/255 -> 0.4/255, τ = 0.1, ζ = 0. CPU defaults (cifar10-mini): 8 rounds x 3 steps with
    α 0.6/255 -> 1.2/255 (3x, so that δ still reaches ε in few steps); the crafting model's lr and
    weight decay as published, its momentum and batch size the run's. Victim accuracy on
    cifar10-mini, run seed 0 (clean: cnn 0.491, cnn16 0.527):
    rounds, lr / wd        cnn     cnn16
    6, 0.05 / 5e-4         0.216   0.330
    6, 0.1 / 1e-4          0.252   0.324
    8, 0.1 / 1e-4          0.239   0.256
    8, 0.05 / 5e-4         0.219   0.253
    Six rounds left the wider crafting model's δ a weak shortcut (cnn16 at 0.62x clean); eight
    bring both widths under half of clean. The published lr and wd cost 0.02-0.04 at width 8.
    (This table predates `augment`, when x + δ was flipped together; reports/POISONS.md has the
    accuracy with the reference's augmentation.)
    """
    dataset_defaults: ClassVar[dict[str, dict]] = {"digits": {"rounds": 2, "steps": 2}}
    profile_defaults: ClassVar[dict[str, dict]] = {
        "reference": {"rounds": 100, "steps": 10, "step_start": 0.2 / 255, "step_end": 0.4 / 255}}
    rounds: int = 8
    steps: int = 3  # K: signed steps on δ per batch per round (published 10)
    tau: float = 0.1  # temperature of the supervised-contrastive similarity term
    zeta: float = 0.0  # weight of the distance term (0 in the released default)
    step_start: float = 0.6 / 255  # α in the first round
    step_end: float = 1.2 / 255  # α in the last round
    craft_batch: int = 512
    train_epochs_per_round: int = 1
    lr: float = 0.1  # the crafting model's SGD (published); momentum and batch size are the run's
    weight_decay: float = 1e-4

    def validate(self, where: str) -> None:
        super().validate(where)
        check_int_positive(where, rounds=self.rounds, steps=self.steps, craft_batch=self.craft_batch,
                           train_epochs_per_round=self.train_epochs_per_round)
        check_positive(where, epsilon=self.epsilon, tau=self.tau, step_start=self.step_start,
                       step_end=self.step_end, lr=self.lr)
        check_nonnegative(where, zeta=self.zeta, weight_decay=self.weight_decay)


def sim_loss(z: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """L_sim = -(1/B) Σ_i log[Σ_{j: y_j = y_i} exp(s_ij/τ) / Σ_k exp(s_ik/τ)], s = cosine, j = i included."""
    zn = nn.functional.normalize(z, dim=1)
    s = zn @ zn.t() / tau
    same = y.view(-1, 1) == y.view(1, -1)
    pos = torch.logsumexp(s.masked_fill(~same, float("-inf")), dim=1)
    return (torch.logsumexp(s, dim=1) - pos).mean()


def dist_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_dist = (1/B) Σ_i log(1 + (1/d) Σ_{j: y_j = y_i} ||z_i - z_j||_2), d the feature dimension."""
    sq = (z * z).sum(1)
    d2 = (sq.view(-1, 1) + sq.view(1, -1) - 2 * z @ z.t()).clamp_min(1e-12)
    same = (y.view(-1, 1) == y.view(1, -1)) & ~torch.eye(len(y), dtype=torch.bool, device=z.device)
    dist = torch.where(same, d2.sqrt(), torch.zeros_like(d2)).sum(1)
    return torch.log1p(dist / z.shape[1]).mean()


def miue_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tau: float, zeta: float) -> torch.Tensor:
    z = model.features(x)
    loss = sim_loss(z, y, tau)
    if zeta:
        loss = loss + zeta * dist_loss(z, y)
    return loss


def step_schedule(p: MIUEParams) -> list[float]:
    if p.rounds == 1:
        return [p.step_start]
    return [p.step_start + (p.step_end - p.step_start) * r / (p.rounds - 1) for r in range(p.rounds)]


def augment(x: torch.Tensor, delta: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """The reference's post-augmentation: each clean image randomly flipped, then δ added unflipped."""
    return (flip_crop(x, gen, flip, 0) + delta).clamp(0, 1)


def delta_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, p: MIUEParams,
                alpha: float, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """One round of δ updates: eval mode, `p.steps` signed descent steps on L per shuffled batch."""
    model.eval()
    dev = next(model.parameters()).device
    delta = delta.clone()
    for idx in batches(len(x), p.craft_batch, gen):
        xb, yb, db = x[idx].to(dev), y[idx].to(dev), delta[idx].to(dev)
        for _ in range(p.steps):
            db = db.detach().requires_grad_(True)
            xin = augment(xb, db, gen, flip)
            grad = torch.autograd.grad(miue_loss(model, xin, yb, p.tau, p.zeta), db)[0]
            db = sign_step(db.detach(), grad, alpha, xb, p.epsilon)
        delta[idx] = db.cpu()
    return delta


@POISONS.register("miue", "MI-UE (Zhu et al. 2026): pull same-class features together (supervised-contrastive "
                  "loss on penultimate features), bi-level, l-inf 8/255", MIUEParams)
def craft_miue(ctx: CraftContext, p: MIUEParams) -> torch.Tensor:
    delta, _ = craft_miue_delta(ctx, p)
    return release(ctx.x, delta, p.norm, p.epsilon)


def craft_miue_delta(ctx: CraftContext, p: MIUEParams) -> tuple[torch.Tensor, nn.Module]:
    """δ of MI-UE and the crafting model at the end of the last round."""
    gen = torch.Generator().manual_seed(derive(ctx.seed, "miue", "noise"))
    x, y, flip = ctx.x, ctx.y, ctx.train.flip
    # channels-last weights: the convolutions and pooling (and with them the batches) then run in that
    # layout, which oneDNN runs about 1.5x faster at one thread; a no-op for models without 4-D weights
    model = crafting_model(ctx, "miue").to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=ctx.train.momentum, weight_decay=p.weight_decay)
    steps_per_epoch = -(-len(x) // ctx.train.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=p.rounds * p.train_epochs_per_round * steps_per_epoch)
    stream = BatchStream(len(x), ctx.train.batch_size, gen)
    delta = torch.zeros_like(x)
    alphas = step_schedule(p)
    for r in progress(range(p.rounds), desc="miue", unit="round"):
        for _ in range(p.train_epochs_per_round * steps_per_epoch):
            idx = next(stream)
            model_step(model, opt, augment(x[idx], delta[idx], gen, flip), y[idx], gen, False)  # flipped already
            sched.step()
        delta = delta_steps(model, x, y, delta, p, alphas[r], gen, flip)
    model.eval()
    return delta, model
