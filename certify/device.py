"""Threads and devices: the torch thread count a task runs with (configuration, set per task by the
graph), the cores this process may use, and a device's name for the report. Where a task computes
is decided per task from the run's device kind (`certify.context.task_device`); floats stay float32.
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


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type
