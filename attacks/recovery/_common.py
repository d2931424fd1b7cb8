"""What the recovery attacks share: the eta-ball around theta_ue.

Distances are l2 over all trainable parameters flattened (`certify.models.trainable`:
conv/linear weights and biases, BN affine; never BN buffers).
"""
from __future__ import annotations

import math

import torch

from certify.errors import UserError

CONSTRAINTS = ("ball", "sphere")
BN_MODES = ("frozen", "re-estimated")


def distance(params: dict[str, torch.Tensor], origin: dict[str, torch.Tensor]) -> float:
    """||params - origin||_2 over all tensors flattened together."""
    return math.sqrt(sum(float((params[n].detach() - origin[n]).double().pow(2).sum()) for n in origin))


def project(params: dict[str, torch.Tensor], origin: dict[str, torch.Tensor], eta: float,
            constraint: str = "ball") -> dict[str, torch.Tensor]:
    """New tensors origin + d', d = params - origin: ball: d' = d * min(1, eta/||d||); sphere: d' = d * eta/||d||.

    Pure: neither input is changed. A zero d is returned unchanged under either constraint (the
    sphere has no direction to pick).
    """
    if constraint not in CONSTRAINTS:
        raise UserError(f"recovery: constraint must be one of {', '.join(CONSTRAINTS)}, got {constraint!r}")
    norm = distance(params, origin)
    if norm == 0.0 or (constraint == "ball" and norm <= eta):
        return {n: params[n].detach().clone() for n in origin}
    factor = eta / norm
    return {n: origin[n] + (params[n].detach() - origin[n]) * factor for n in origin}


def project_(model: torch.nn.Module, origin: dict[str, torch.Tensor], eta: float, constraint: str) -> None:
    """`project` applied in place to the model's trainable parameters."""
    named = {n: p for n, p in model.named_parameters() if n in origin}
    new = project(named, origin, eta, constraint)
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(new[n])

