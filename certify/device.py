"""Device, dtype and thread count: chosen here, once, and passed down."""
from __future__ import annotations

import os

import torch

def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


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
