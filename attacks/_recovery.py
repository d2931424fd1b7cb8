"""What both weight-perturbation recovery attacks share: the attacker's clean set and the eta-ball.

The attacker (Provably Unlearnable Data Examples, 2024) holds theta_ue and a small clean labelled
set D_r, disjoint from the test set: `attacker_split` draws it as a seeded stratified fraction
(default 20 %) of the clean training split. Distances are l2 over all trainable parameters
flattened (`certify.smoothing.trainable`: conv/linear weights and biases, BN affine; never BN buffers).
"""
from __future__ import annotations

import math

import torch

from certify.errors import UserError
from certify.seeding import generator

CONSTRAINTS = ("ball", "sphere")
BN_MODES = ("frozen", "re-estimated")


def attacker_split(x: torch.Tensor, y: torch.Tensor, fraction: float = 0.2, seed: int = 0):
    """A seeded, stratified `fraction` of (x, y) (at least one image per class), in source order."""
    if not 0 < fraction <= 1:
        raise UserError(f"recovery: attacker fraction must be in (0, 1], got {fraction!r}")
    g = generator(seed, "recovery", "attacker-split")
    picked = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        k = max(1, int(round(fraction * len(idx))))
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    keep = torch.sort(torch.cat(picked)).values
    return x[keep], y[keep]


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


def check_etas(etas) -> list[float]:
    out = []
    for e in etas:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
            raise UserError(f"recovery: every eta must be a finite number >= 0, got {e!r}")
        out.append(float(e))
    return out
