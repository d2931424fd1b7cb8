"""The tiny base every poison shares.

A poison is one function `craft(ctx, params) -> released images`, registered in `POISONS` with a
parameter dataclass (subclass of `PoisonParams`) that declares its norm and budget. `release`
turns a perturbation into what a data owner publishes (rounded to 8-bit storage, in [0, 1]) and
`measure` checks the budget on exactly that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from certify.errors import UserError
from certify.registry import Registry
from certify.training import TrainConfig
from certify.validation import check_nonnegative

STORAGE_LEVELS = 255  # 8-bit images


@dataclass
class CraftContext:
    """What every poison may use: the clean training split, a model factory and the run settings."""
    x: torch.Tensor  # clean training images N x C x H x W in [0, 1] on the 1/255 grid
    y: torch.Tensor  # int64 labels
    num_classes: int
    # seed -> fresh model of the run's architecture on `device`, and the run's training settings
    # (crafting models reuse lr, batch size, ...); neither is given to a poison whose Params say
    # `uses_model = False`
    make_model: Callable[[int], nn.Module] | None
    train: TrainConfig | None
    seed: int  # this poison's own seed (derived from the run seed and the poison's name)
    device: torch.device


@dataclass
class PoisonParams:
    """The fields every poison has. Model-based poisons declare `dataset_defaults` (certify/registry.py)
    for digits, the fast dataset of tests and smoke runs (plumbing, not protection): the smallest
    crafting schedule that still exercises every update rule."""
    norm: ClassVar[str] = "linf"  # linf | l2 | l0 | none
    # whether crafting builds or trains a model (`ctx.make_model`, `ctx.train`); a poison that says
    # False gets neither, and the run's training settings are not part of its cache key
    uses_model: ClassVar[bool] = True
    epsilon: float = 8 / 255

    def validate(self, where: str) -> None:
        check_nonnegative(where, epsilon=self.epsilon)

    def epsilon_for(self, shape: tuple[int, ...]) -> float:
        """The budget applied to images of `shape` (poisons with size-scaled l2 budgets override it)."""
        return self.epsilon


NORMS = ("linf", "l2", "l0", "none")


def params_problem(params: type | None) -> str | None:
    """The contract crafting and the report rely on: a PoisonParams subclass with a known norm."""
    if not (isinstance(params, type) and issubclass(params, PoisonParams)):
        return f"params must subclass attacks.base.PoisonParams, got {params!r}"
    if params.norm not in NORMS:
        return f"norm must be one of {', '.join(NORMS)}, got {params.norm!r}"
    return None


POISONS = Registry("poison", package="attacks", group="certify.poisons", check=params_problem,
                   overrides="poison_params", reserved=("all",))


def quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * STORAGE_LEVELS) / STORAGE_LEVELS


def release(x: torch.Tensor, delta: torch.Tensor, norm: str, epsilon: float) -> torch.Tensor:
    """Clean + delta rounded to 8-bit storage and clipped to [0, 1], with the budget kept.

    `x` is on the storage grid, so rounding delta itself (not x + delta) keeps |delta| <= epsilon
    for an l-inf budget on the grid; for an l2 budget, images that rounding pushed past epsilon
    are rounded again after shrinking.
    """
    delta = quantize(delta)
    if norm == "linf":  # an off-grid budget (1.5/255) holds the largest grid step within it
        step = math.floor(epsilon * STORAGE_LEVELS + 1e-6) / STORAGE_LEVELS
        delta = delta.clamp(-step, step)
    released = (x + delta).clamp(0, 1)
    if norm == "l2":
        for _ in range(20):
            over = per_image_norm(released - x, "l2") > epsilon + 1e-6
            if not over.any():
                break
            shrink = epsilon / per_image_norm(released[over] - x[over], "l2")
            released[over] = (x[over] + quantize((released[over] - x[over]) * shrink.view(-1, 1, 1, 1) * 0.99)).clamp(0, 1)
    return quantize(released)  # exactly on the grid (x + quantized delta can be 1 ulp off)


def per_image_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.reshape(len(delta), -1)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(dim=1)
    if norm == "l0":  # pixels changed (any channel), the unit of one-pixel attacks
        per_pixel = delta.abs().amax(1).reshape(len(delta), -1) if delta.dim() == 4 else flat.abs()
        return (per_pixel > 0.5 / STORAGE_LEVELS).sum(1).to(delta.dtype)
    return torch.zeros(len(delta))


def measure(x: torch.Tensor, released: torch.Tensor, norm: str) -> float:
    """The largest per-image norm of released - clean."""
    if norm == "none":
        return float((released - x).abs().max()) if len(x) else 0.0
    return float(per_image_norm(released - x, norm).max())


def check_release(label: str, x: torch.Tensor, released) -> torch.Tensor:
    """What a craft must return (a plugin's above all): float32 images of the clean set's shape, finite,
    in [0, 1]; anything else is one line naming the poison (`label`: with its plugin), not a traceback
    in training or a release stored unchecked. Returns it detached (a Parameter, or a tensor that
    requires grad, is accepted as its values)."""
    want = f"expected float32 images shaped like the clean ones ({'×'.join(map(str, x.shape))}) in [0, 1]"
    if not isinstance(released, torch.Tensor):
        raise UserError(f"poison {label}: craft returned {type(released).__name__}; {want}")
    # a subclass may override every operation (`__torch_function__`, even `.shape`): only its type is read
    if type(released) not in (torch.Tensor, torch.nn.Parameter):
        raise UserError(f"poison {label}: craft returned a {type(released).__name__} (a torch.Tensor subclass); "
                        f"{want}, as a plain torch.Tensor")
    released = released.detach()
    if released.device.type == "meta":  # a shape without values: any reduction on it raises
        raise UserError(f"poison {label}: craft returned a tensor on device meta (it holds no values); {want}")
    if tuple(released.shape) != tuple(x.shape):
        raise UserError(f"poison {label}: craft returned shape {'×'.join(map(str, released.shape))}; {want}")
    if released.dtype != torch.float32 or released.layout != torch.strided:
        raise UserError(f"poison {label}: craft returned a {str(released.dtype).removeprefix('torch.')} "
                        f"{str(released.layout).removeprefix('torch.')} tensor; {want}")
    if not bool(torch.isfinite(released).all()):
        raise UserError(f"poison {label}: craft returned NaN or Inf; {want}")
    lo, hi = float(released.min()), float(released.max())
    if lo < 0 or hi > 1:
        raise UserError(f"poison {label}: craft returned values {lo:g} .. {hi:g}, outside [0, 1]; {want}")
    return released


def check_budget(name: str, x: torch.Tensor, released: torch.Tensor, norm: str, epsilon: float) -> float:
    measured = measure(x, released, norm)
    if norm != "none" and measured > epsilon + 1e-6:
        raise UserError(f"poison {name}: released data exceeds its {norm} budget "
                        f"({measured:.6f} > {epsilon:.6f})")
    return measured


UNDERSHOOT = 0.5  # a release whose measured perturbation is under this fraction of its budget is flagged


def _units(v: float, norm: str) -> str:
    return f"{v * 255:.3g}/255" if norm == "linf" else f"{v:.4g}"


def undershoot(name: str, norm: str, epsilon: float, measured: float) -> str | None:
    """A warning where the crafting used well under its budget (None otherwise): a row of a plan or a
    report read at "8/255" would otherwise describe a weaker release than the label says."""
    if norm not in ("linf", "l2") or epsilon <= 0 or measured >= UNDERSHOOT * epsilon:
        return None
    return (f"{name}: the measured {norm} perturbation {_units(measured, norm)} is under half of the budget "
            f"{_units(epsilon, norm)}: the crafting did not reach it (its schedule or step size stops short), so "
            "results at this budget describe a smaller one")


def sign_step(delta: torch.Tensor, grad: torch.Tensor, step: float, x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """One signed-gradient *descent* step on delta, projected to the l-inf ball and to valid images."""
    delta = (delta - step * grad.sign()).clamp(-epsilon, epsilon)
    return (x + delta).clamp(0, 1) - x
