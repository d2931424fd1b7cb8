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


def _guarded(name: str, hook: str, fn):
    """A plugin's hook behind the same boundary as its factory: what it raises during training is one
    line naming the plugin and the hook."""
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (Exception, SystemExit) as e:
            raise UserError(f"defense {DEFENSES.label(name)}: {hook} failed: {plugins.one_line(e)}") from None
    return call


def make(name: str, params) -> Defense:
    """The defense `name` at `params`: its factory behind the plugin boundary, its result checked; a
    plugin's hooks are guarded too (a built-in's exception stays a traceback: a bug)."""
    d = DEFENSES.call(name, "make", params)
    if not isinstance(d, Defense):
        raise UserError(f"defense {DEFENSES.label(name)}: make returned {type(d).__name__}; expected a "
                        f"defenses.base.Defense")
    if DEFENSES.get(name).origin == plugins.BUILT_IN:
        return d
    return Defense(d.name, **{h: _guarded(name, h, getattr(d, h)) if getattr(d, h) is not None else None
                              for h in HOOKS})
