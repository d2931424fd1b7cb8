"""PUE, provably unlearnable examples (Wang et al., 2024): class-wise EM with random weight perturbation.

Min-min like EM, but once the crafting model's accuracy on x + δ exceeds `rwp_switch` both steps see
randomly perturbed weights θ + σ·ε (ε ~ N(0, I) on every trainable parameter, as the certificate's
draws are; see certify.certificate.draws), at the levels σ ∈ linspace(0, sigma_max, levels):
- model step: the reference's RWP update (certify.certificate.surrogate.rwp_update): one optimizer
  step per level on the loss averaged over `draws_model` weight draws (divided by the number of
  levels), its gradient clipped to `grad_clip`;
- δ step, as the reference's: per level, every image's input gradient summed over `draws_delta`
  draws, and each class's δ moves by the mean over its images in the batch of their signed steps,
  δ_k ← clip_ε(δ_k − step · mean_{i: y_i = k} sign(g_i)) (`classwise_sign_step`).
δ starts at zero, as in the reference. Class-wise (one δ per class) and crafted on a stratified
subset, as in the reference; stop once the crafting model's error on the subset is below
`stop_error` with RWP on (or after `max_rounds`).

σ_max is the run's σ: the crafting task fills `sigma_max` in (certify/crafting.py) from the run's
σ artifact (`--sigma F`, or what `--sigma auto` picks from the clean model), so PUE is crafted for
the certificate it is judged by. An explicit `poison_params.pue.sigma_max` wins over the run's σ.
The report's parameters of PUE record the σ it was crafted at.

Remaining differences from the reference (make_pue.py): σ_max is the run's σ, not 0.25; the CPU
profile `quick` takes 1 weight draw per level per model step (the reference and `--profile
reference` take 100); at most `max_rounds` rounds (the reference has no cap); the crafting model is
the run's architecture with the run's training settings (the reference: ResNet-18 and its own).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from attacks.base import POISONS, CraftContext, PoisonParams, release
from attacks._common import BatchStream, batches, check_int_positive, crafting_model, perturbed_images, sgd
from certify.certificate.surrogate import perturbed, rwp_update
from certify.errors import UserError
from certify.progress import progress
from certify.seeding import derive, stratified_draw
from certify.training import evaluate, flip_crop
from certify.validation import check_nonnegative, check_positive

PUBLISHED_SIGMA = 0.25  # the reference's crafting noise; used only when PUE is crafted outside a run


@dataclass
class PUEParams(PoisonParams):
    """PUE (class-wise), l-inf.

    Published (the reference's make_pue.sh and make_pue.py, CIFAR-10, ResNet-18): eps 8/255; RWP
    levels {0, 0.05, ..., 0.25} (6); each round 20 model batches, then 1 PGD step on every batch of the
    subset; δ steps of 0.8/255, one per level, on input gradients summed over 10 weight draws; model
    steps one per level on the loss averaged over 100 weight draws, gradients clipped at 5.0; RWP on
    once crafting accuracy on x + δ exceeds 50 %; stratified 20 % subset; stop at error < 0.1.
    Here: σ_max is the run's σ (see the module docstring); at most `max_rounds` rounds (the reference
    has no cap); the crafting model's training settings are the run's (`train`), not the reference's
    ResNet-18 ones. Model draws: 100 under `--profile reference`, 1 in the CPU default `quick`,
    because each draw is one forward-backward pass of the batch per level: 100 draws × 6 levels ×
    20 batches make 12,000 passes a round, about 25 minutes a round on one core for the small CNN
    at batch 128, where 1 draw makes 120. One draw per level still averages the loss over the levels'
    noise without bias; it is noisier, not aimed elsewhere.
    """
    # digits: RWP from the first round (its crafting accuracy stays near chance for rounds)
    dataset_defaults: ClassVar[dict[str, dict]] = {
        "digits": {"max_rounds": 2, "model_steps": 3, "levels": 3, "subset": 0.5, "draws_delta": 2, "rwp_switch": 0.0}}
    profile_defaults: ClassVar[dict[str, dict]] = {"reference": {"draws_model": 100}}
    run_sigma: ClassVar[str] = "sigma_max"  # the field the crafting task sets to the run's σ when it is None
    sigma_max: Optional[float] = None  # None: the run's σ; a number: this σ, whatever the run's
    levels: int = 6  # σ ∈ linspace(0, sigma_max, levels)
    draws_delta: int = 10  # weight draws per level per δ step
    draws_model: int = 1  # weight draws per level per model step (published 100)
    rwp_switch: float = 0.5  # RWP switches on once crafting accuracy on x + δ exceeds this
    subset: float = 0.2  # stratified fraction of the training set the noise is crafted on
    max_rounds: int = 15  # the reference has no cap (cifar10-mini, seed 0, σ 0.02: stopped after 12 rounds)
    model_steps: int = 20  # crafting-model batches per round (ctx.train batch size and lr)
    pgd_steps: int = 1  # signed steps on δ per batch per round (one per level each)
    step_size: float = 0.8 / 255
    grad_clip: float = 5.0  # l2 norm the crafting model's gradients are clipped to (0: not)
    stop_error: float = 0.1
    craft_batch: int = 512

    def validate(self, where: str) -> None:
        super().validate(where)
        check_int_positive(where, levels=self.levels, draws_delta=self.draws_delta,
                           draws_model=self.draws_model, max_rounds=self.max_rounds,
                           model_steps=self.model_steps, pgd_steps=self.pgd_steps, craft_batch=self.craft_batch)
        check_positive(where, epsilon=self.epsilon, step_size=self.step_size)
        check_nonnegative(where, grad_clip=self.grad_clip)
        if self.sigma_max is not None:
            check_nonnegative(where, sigma_max=self.sigma_max)
        for name in ("rwp_switch", "stop_error"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise UserError(f"{where}: {name} must be in [0, 1], got {v!r}")
        if isinstance(self.subset, bool) or not isinstance(self.subset, (int, float)) or not 0 < self.subset <= 1:
            raise UserError(f"{where}: subset must be in (0, 1], got {self.subset!r}")


def _draws(level: float, n: int) -> int:
    return n if level > 0 else 1


def classwise_sign_step(delta: torch.Tensor, grad: torch.Tensor, y: torch.Tensor, step: float,
                        epsilon: float) -> torch.Tensor:
    """The class δ (K x ...) after one signed descent step of a batch: each class moves by the mean of
    its images' signed steps, step · mean_{i: y_i = k} sign(grad_i) (per-sample `grad`, B x ...), then
    is clipped to the ε-box; a class without images in the batch stays."""
    counts = torch.bincount(y, minlength=len(delta)).clamp_min(1).to(delta.dtype)
    mean_sign = torch.zeros_like(delta).index_add_(0, y, grad.sign()) / counts.view(-1, *[1] * (delta.dim() - 1))
    return (delta - step * mean_sign).clamp(-epsilon, epsilon)


@POISONS.register("pue", "provably unlearnable examples (Wang et al. 2024): class-wise EM with random "
                  "weight perturbation in both steps, l-inf 8/255", PUEParams)
def craft_pue(ctx: CraftContext, p: PUEParams) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive(ctx.seed, "pue", "noise"))
    dev = ctx.device
    sub, _ = stratified_draw(ctx.y, float(p.subset), derive(ctx.seed, "pue", "subset"), "poison pue: subset")
    x, y = ctx.x[sub], ctx.y[sub]
    model = crafting_model(ctx, "pue")
    opt = sgd(model, ctx)
    sigma_max = PUBLISHED_SIGMA if p.sigma_max is None else p.sigma_max
    levels = [float(v) for v in np.linspace(0.0, sigma_max, p.levels)]
    stream = BatchStream(len(x), ctx.train.batch_size, gen)
    delta = torch.zeros((ctx.num_classes,) + tuple(x.shape[1:]), device=dev)
    rwp = p.rwp_switch <= 0
    bar = progress(range(p.max_rounds), desc="pue", unit="round")
    for _ in bar:
        active = levels if rwp else [0.0]
        model.train()
        for _ in range(p.model_steps):
            idx = next(stream)
            xb = flip_crop(perturbed_images(x[idx], delta[y[idx].to(dev)].cpu()), gen, ctx.train.flip, 0).to(dev)
            yb = y[idx].to(dev)
            rwp_update(model, opt, xb, yb, gen, active, p.draws_model, "per-level", p.grad_clip)
        model.eval()
        for idx in batches(len(x), p.craft_batch, gen):
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            for _ in range(p.pgd_steps):
                for level in active:  # one step per level on each image's gradient summed over draws
                    params = {k: v.detach() for k, v in model.named_parameters()}
                    d = delta[yb].detach().requires_grad_(True)  # each image's own copy of its class's δ
                    xin = perturbed_images(xb, d)
                    loss = sum(F.cross_entropy(functional_call(model, perturbed(params, level, gen), (xin,)), yb)
                               for _ in range(_draws(level, p.draws_delta)))
                    g = torch.autograd.grad(loss, d)[0]
                    delta = classwise_sign_step(delta, g, yb, p.step_size, p.epsilon)
        acc = evaluate(model, perturbed_images(x, delta[y.to(dev)].cpu()), y, ctx.train.eval_batch)
        bar.set_postfix(craft_acc=f"{acc:.3f}", rwp=rwp)
        if rwp and 1 - acc < p.stop_error:
            break
        rwp = rwp or acc > p.rwp_switch
    return release(ctx.x, delta.cpu()[ctx.y], p.norm, p.epsilon)
