"""PUE, provably unlearnable examples (Wang et al., 2024): class-wise EM with random weight perturbation.

Min-min like EM, but once the crafting model's accuracy on x + δ exceeds `rwp_switch` both steps see
randomly perturbed weights θ + σ·ε (ε ~ N(0, I) on every trainable parameter, as the certificate's
draws are; see certify.smoothing), at the levels σ ∈ linspace(0, sigma_max, levels):
- model step: per level, the loss averaged over `draws_model` weight draws, one optimizer step per level;
- δ step: per level, input gradients summed over `draws_delta` draws, one signed step per level.
Class-wise (one δ per class) and crafted on a stratified subset, as in the reference; stop once the
crafting model's error on the subset is below `stop_error` (or after `max_rounds`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from attacks.base import POISONS, CraftContext, PoisonParams, release
from attacks.em import (BatchStream, batches, check_int_positive, crafting_model, perturbed_images, sgd,
                        uniform_init)
from certify.errors import UserError
from certify.progress import progress
from certify.seeding import derive, stratified_draw
from certify.training import evaluate, flip_crop
from certify.validation import check_nonnegative, check_positive


@dataclass
class PUEParams(PoisonParams):
    """PUE (class-wise), l-inf.

    Published: eps 8/255, σ levels {0, 0.05, ..., 0.25} (6), δ steps of 0.8/255 summing 10 weight draws
    per level, model steps averaging 100 draws per level, RWP on above 50 % crafting accuracy,
    stratified 20 % subset, stop at error < 0.1, 20 PGD steps and 10 model batches per round.
    CPU defaults (cifar10-mini, cnn): 1 draw per level in both steps, 5 PGD steps, at most 6 rounds.
    """
    dataset_defaults: ClassVar[dict[str, dict]] = {
        "digits": {"max_rounds": 2, "model_steps": 3, "pgd_steps": 2, "levels": 3, "subset": 0.5}}
    sigma_max: float = 0.25
    levels: int = 6  # σ ∈ linspace(0, sigma_max, levels)
    draws_delta: int = 1  # weight draws per level per δ step (published 10)
    draws_model: int = 1  # weight draws per level per model step (published 100)
    rwp_switch: float = 0.5  # RWP switches on once crafting accuracy on x + δ exceeds this
    subset: float = 0.2  # stratified fraction of the training set the noise is crafted on
    max_rounds: int = 6
    model_steps: int = 10
    pgd_steps: int = 5  # published 20
    step_size: float = 0.8 / 255
    stop_error: float = 0.1
    craft_batch: int = 512

    def validate(self, where: str) -> None:
        super().validate(where)
        check_int_positive(where, levels=self.levels, draws_delta=self.draws_delta,
                           draws_model=self.draws_model, max_rounds=self.max_rounds,
                           model_steps=self.model_steps, pgd_steps=self.pgd_steps, craft_batch=self.craft_batch)
        check_positive(where, epsilon=self.epsilon, step_size=self.step_size)
        check_nonnegative(where, sigma_max=self.sigma_max)
        for name in ("rwp_switch", "stop_error"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise UserError(f"{where}: {name} must be in [0, 1], got {v!r}")
        if isinstance(self.subset, bool) or not isinstance(self.subset, (int, float)) or not 0 < self.subset <= 1:
            raise UserError(f"{where}: subset must be in (0, 1], got {self.subset!r}")


def _noisy(params: dict, sigma: float, gen: torch.Generator) -> dict:
    return {n: p + sigma * torch.randn(p.shape, generator=gen).to(p.device) for n, p in params.items()}


def _draws(level: float, n: int) -> int:
    return n if level > 0 else 1


@POISONS.register("pue", "provably unlearnable examples (Wang et al. 2024): class-wise EM with random "
                  "weight perturbation in both steps, l-inf 8/255", PUEParams)
def craft_pue(ctx: CraftContext, p: PUEParams) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive(ctx.seed, "pue", "noise"))
    dev = ctx.device
    sub, _ = stratified_draw(ctx.y, float(p.subset), derive(ctx.seed, "pue", "subset"), "poison pue: subset")
    x, y = ctx.x[sub], ctx.y[sub]
    model = crafting_model(ctx, "pue")
    opt = sgd(model, ctx)
    levels = [float(v) for v in np.linspace(0.0, p.sigma_max, p.levels)]
    stream = BatchStream(len(x), ctx.train.batch_size, gen)
    delta = uniform_init((ctx.num_classes,) + tuple(x.shape[1:]), p.epsilon, gen).to(dev)
    rwp = p.rwp_switch <= 0
    bar = progress(range(p.max_rounds), desc="pue", unit="round")
    for _ in bar:
        active = levels if rwp else [0.0]
        model.train()
        for _ in range(p.model_steps):
            idx = next(stream)
            xb = flip_crop(perturbed_images(x[idx], delta[y[idx].to(dev)].cpu()), gen, ctx.train.flip, 0).to(dev)
            yb = y[idx].to(dev)
            for level in active:  # one optimizer step per level
                params = dict(model.named_parameters())
                n = _draws(level, p.draws_model)
                loss = sum(F.cross_entropy(functional_call(model, _noisy(params, level, gen) if level else params,
                                                           (xb,)), yb) for _ in range(n)) / n
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        for idx in batches(len(x), p.craft_batch, gen):
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            for _ in range(p.pgd_steps):
                for level in active:  # one signed step per level, gradients summed over draws
                    params = {k: v.detach() for k, v in model.named_parameters()}
                    d = delta.detach().requires_grad_(True)
                    xin = perturbed_images(xb, d[yb])
                    loss = sum(F.cross_entropy(functional_call(model, _noisy(params, level, gen), (xin,)), yb)
                               for _ in range(_draws(level, p.draws_delta)))
                    g = torch.autograd.grad(loss, d)[0]
                    delta = (delta - p.step_size * g.sign()).clamp(-p.epsilon, p.epsilon)
        acc = evaluate(model, perturbed_images(x, delta[y.to(dev)].cpu()), y, ctx.train.eval_batch)
        bar.set_postfix(craft_acc=f"{acc:.3f}", rwp=rwp)
        if rwp and 1 - acc < p.stop_error:
            break
        rwp = rwp or acc > p.rwp_switch
    return release(ctx.x, delta.cpu()[ctx.y], p.norm, p.epsilon)
