"""Threads and devices: the torch thread count a task runs with (configuration, set per task by the
graph), the cores this process may use, and a device's name for the report. Where a task computes
is decided per task from the run's device kind (`certify.context.task_device`); floats stay float32;
the CPU's fast memory layout for conv nets (`channels_last`).
"""
from __future__ import annotations

import os

import torch


def set_threads(threads: int) -> None:
    """Thread count is configuration (it can change float reductions), never derived at random."""
    torch.set_num_threads(max(1, int(threads)))


def get_threads() -> int:
    return torch.get_num_threads()


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor (images, conv kernels) in channels-last memory, anything else as it is: oneDNN's
    convolutions and pooling for the small conv nets here run ~1.4-2.5x faster in it on the CPU.
    Values are the same; conv arithmetic may differ by float rounding."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type
