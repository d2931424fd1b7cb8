"""The tiny base of train-time defences: a defence changes the training data, the batches or the loss."""
from __future__ import annotations

from certify.registry import Registry

DEFENSES = Registry("defence", package="defenses")
