"""The noise-robust surrogate that certificates smooth: RWP (random weight perturbation) training.

At each RWP step the loss is the mean over noise levels linspace(0, sigma, L) of the
cross-entropy of theta + sigma_j * eps (fresh eps per level and step, evaluated through
`functional_call`, so the gradient reaches theta). The recipe scales with sigma; every poison of a
run is certified with the same recipe.

By default (init `victim`) the surrogate is the model trained normally on the same data, fine-tuned
with RWP for a few epochs: that training is the plain phase the reference runs before switching RWP
on, so it is not paid twice. Measured on cifar10-mini (sigma 0.02, q 0.9, N 300): 3 warm epochs
certified clean 0.469 / MI-UE 0.305 against 0.429 / 0.314 for 10 epochs from scratch, in a
quarter of the time. From scratch (the `reference` profile), RWP is switched on after a fixed
fraction of the epochs, so it does not depend on how fast a dataset is learned.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from certify.certificate.config import SurrogateConfig
from certify.training import TrainConfig, train


def rwp_levels(sigma: float, levels: int) -> list[float]:
    return [float(v) for v in np.linspace(0.0, sigma, levels)]


def recipe(cfg: SurrogateConfig, sigma: float) -> dict:
    """What the report records and what `certify check` compares."""
    levels = [0.0] if cfg.kind == "standard" else rwp_levels(sigma, cfg.levels)
    rec = {"kind": cfg.kind, "init": cfg.init, "levels": levels, "epochs": cfg.epochs}
    if cfg.kind == "rwp":
        rec["draws_per_level"] = cfg.draws_per_level
        if cfg.init == "scratch":
            rec["switch_fraction"] = cfg.switch_fraction
    return rec


def rwp_loss(levels: list[float], draws_per_level: int, switch_epoch: int):
    """A `training.train` loss override: plain CE before `switch_epoch`, the RWP mean after."""
    state = {"epoch": 0}

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if state["epoch"] < switch_epoch:
            return F.cross_entropy(model(x), y)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        losses = []
        for level in levels:
            for _ in range(draws_per_level if level > 0 else 1):
                if level == 0:
                    losses.append(F.cross_entropy(model(x), y))
                    continue
                noisy = {n: p + level * torch.randn(p.shape, generator=gen).to(p.device) for n, p in params.items()}
                losses.append(F.cross_entropy(functional_call(model, noisy, (x,)), y))
        return torch.stack(losses).mean()

    def on_epoch(epoch: int, model: nn.Module) -> None:
        state["epoch"] = epoch + 1

    return loss_fn, on_epoch


def train_surrogate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train_cfg: TrainConfig,
                    cfg: SurrogateConfig, sigma: float, seed: int, desc: str = "surrogate") -> dict:
    """Train `model` in place as the certificate's surrogate (from the weights it holds: the
    victim's or fresh ones, as cfg.init says); return its training history."""
    tc = TrainConfig(**{**train_cfg.__dict__, "epochs": cfg.epochs})
    if cfg.kind == "standard":
        return train(model, x, y, tc, seed, desc=desc)
    switch = 0 if cfg.init == "victim" else int(round(cfg.switch_fraction * cfg.epochs))
    loss_fn, on_epoch = rwp_loss(rwp_levels(sigma, cfg.levels), cfg.draws_per_level, switch)
    return train(model, x, y, tc, seed, loss_fn=loss_fn, epoch_callback=on_epoch, desc=desc)
