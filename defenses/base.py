"""The tiny base of train-time defenses: a defense changes the training data, the batches or the loss.

A defense file registers a factory `make(params) -> Defense` in `DEFENSES` with its parameter
dataclass. The pipeline trains a victim on the released data with the defense's hooks and reports
its final and peak test accuracy (so early stopping is read off every run).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from certify import plugins
from certify.errors import UserError
from certify.registry import Registry
from certify.training import BatchTransform, LossFn

# `--defense none` alone is no defense: no defense may take the name
DEFENSES = Registry("defense", package="defenses", group="certify.defenses", overrides="defense_params",
                    reserved=("none",))


@dataclass
class Defense:
    name: str
    # applied once to the whole training set before training (e.g. JPEG or grayscale squeezing)
    prepare: "callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None" = None
    batch_transform: BatchTransform | None = None  # per batch (Cutout, MixUp, CutMix)
    loss_fn: LossFn | None = None  # the training loss (adversarial training, UEraser)


HOOKS = ("prepare", "batch_transform", "loss_fn")


def _guarded(name: str, hook: str, fn, check=None):
    """A plugin's hook behind the same boundary as its factory: what it raises during training is one
    line naming the plugin and the hook, and so is a result `check(args, result)` refuses (a message)."""
    def call(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            raise UserError(f"defense {DEFENSES.label(name)}: {hook} failed: {plugins.one_line(e)}") from None
        problem = check(args, result) if check is not None else None
        if problem:
            raise UserError(f"defense {DEFENSES.label(name)}: {hook} returned {problem}")
        return result
    return call


def _kind(t) -> str:
    if not isinstance(t, torch.Tensor):
        return type(t).__name__
    return f"a {str(t.dtype).removeprefix('torch.')} tensor of shape {'×'.join(map(str, t.shape)) or '()'}"


def _pair_problem(args, result, classes: int | None, soft_ok: bool) -> str | None:
    """What is wrong with (x, y) returned for input (x, y, ...): images float32 of the input's image
    shape, finite, in [0, 1]; labels one per image, integers in 0..classes-1 (`classes` None: not
    known), or (`soft_ok`, a batch) float targets N×K."""
    x_in = args[0]
    if not (isinstance(result, tuple) and len(result) == 2):
        n = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        return f"{n}; expected (images, labels)"
    x, y = result
    want = f"images like its input (float32, N×{'×'.join(map(str, x_in.shape[1:]))}, finite, in [0, 1])"
    if (type(x) is not torch.Tensor or x.dtype != torch.float32 or x.layout != torch.strided
            or x.device != x_in.device or x.dim() != 4 or tuple(x.shape[1:]) != tuple(x_in.shape[1:]) or len(x) < 1):
        return f"images as {_kind(x)}; expected {want}"
    if not bool(torch.isfinite(x).all()):
        return f"images with NaN or Inf; expected {want}"
    if float(x.min()) < 0 or float(x.max()) > 1:
        return f"images with values {float(x.min()):g} .. {float(x.max()):g}; expected {want}"
    if type(y) is not torch.Tensor or len(y) != len(x) or y.device != x_in.device:
        return f"labels as {_kind(y)} for {len(x)} images; expected one label per image"
    if y.dtype == torch.int64 and y.dim() == 1:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (classes is not None and hi >= classes):
            return f"labels {lo} .. {hi}; expected 0..{classes - 1 if classes is not None else 'K-1'}"
        return None
    if soft_ok and y.is_floating_point() and y.dim() == 2 and bool(torch.isfinite(y).all()):
        return None
    return f"labels as {_kind(y)}; expected int64 labels (N,){' or float targets N×K' if soft_ok else ''}"


def _loss_problem(args, result) -> str | None:
    if type(result) is not torch.Tensor or result.dim() != 0 or not result.is_floating_point():
        return f"{_kind(result)}; expected a scalar float tensor (the batch's loss)"
    if not result.requires_grad:
        return "a loss that does not require grad; expected one computed from the model's output"
    if not bool(torch.isfinite(result)):
        return "a NaN or infinite loss"
    return None


def make(name: str, params) -> Defense:
    """The defense `name` at `params`: its factory behind the plugin boundary, its result checked; a
    plugin's hooks are guarded too, and what they return is checked (a built-in's exception stays a
    traceback: a bug). A plugin's `prepare` is always called (as the identity where it has none): it
    records the class count K that its `batch_transform`'s labels are checked against."""
    d = DEFENSES.call(name, "make", params)
    if not isinstance(d, Defense):
        raise UserError(f"defense {DEFENSES.label(name)}: make returned {type(d).__name__}; expected a "
                        f"defenses.base.Defense")
    if DEFENSES.get(name).origin == plugins.BUILT_IN:
        return d
    for hook in HOOKS:
        fn = getattr(d, hook)
        if fn is not None and not callable(fn):
            raise UserError(f"defense {DEFENSES.label(name)}: its {hook} is a {type(fn).__name__}, not a function")
    seen: dict[str, int] = {}  # the class count K of the training labels, recorded by prepare

    def record(args, result):
        y = args[1]
        seen["k"] = int(y.max()) + 1 if len(y) else 0
        return _pair_problem(args, result, seen["k"], soft_ok=False)

    prepare = _guarded(name, "prepare", d.prepare or (lambda x, y, seed: (x, y)), record)
    batch = d.batch_transform and _guarded(name, "batch_transform", d.batch_transform,
                                           lambda args, result: _pair_problem(args, result, seen.get("k"), True))
    loss = d.loss_fn and _guarded(name, "loss_fn", d.loss_fn, _loss_problem)
    return Defense(d.name, prepare=prepare, batch_transform=batch, loss_fn=loss)
