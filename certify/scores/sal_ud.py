"""SAL (sharpness-aware learnability) per layer and UD (unlearnable distance), after arXiv 2509.08058.

SAL_t(l) = max over ||v||_2 <= rho * ||theta_l||_2 of |L(theta_l + v, theta_-l) - L(theta)|, one value per
scored layer (the weight of every Conv2d and Linear; biases and norm parameters are not scored) after
each scored epoch t, with the model in eval mode and every other layer frozen. Both sides are solved:
S_max = max_v L(theta_l + v) - L(theta) (ascent) and S_min = L(theta) - min_v L(theta_l + v) (descent), and
SAL = max(S_max, S_min). L is the mean cross-entropy on the model's own training data (a fixed, seeded,
stratified subset of it in the `quick` profile).

Base loss: a fresh eval-mode loss L(theta) on the same data. The reference code reuses the epoch's
running training loss (train mode, averaged over the changing weights of the epoch), a quirk we do not
copy: with it SAL would mix sharpness with the train/eval gap.

Solvers (`SalConfig.method`):
- "quick": `steps` normalised projected-gradient steps per side, each on the gradient of the full
  subset, step size 2 * r / steps (r = rho * ||theta_l||), projected back onto the ball; the extreme loss
  over all iterates (the start included, so SAL >= 0) is kept.
- "reference": the paper's solver: 10 rounds, each a full pass of plain SGD (lr `cfg.lr`, 0.1) over the
  data on a copy of the layer, then the accumulated change is rescaled back into the ball, the loss is
  evaluated and the extreme loss kept.

The model's weights are never modified: every perturbed loss goes through torch.func.functional_call.
Threshold beta (clean model only): per epoch, exact 1-D 2-means on the L clean SAL values, beta_t =
midpoint of the two centres, beta = mean over epochs. #LP = mean over epochs of #{l: SAL_t(l) > beta}.
UD = #LP(protected) / #LP(clean), null when #LP(clean) = 0.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from certify.seeding import derive, stratified_draw
from certify.validation import check_choice, check_nonnegative, check_positive

METHODS = ("quick", "reference")
REFERENCE_ROUNDS = 10


@dataclass
class SalConfig:
    rho: float = 0.05  # ball radius relative to the layer's Frobenius norm
    subset: int = 1000  # fixed seeded stratified subset of the model's training data (0 = all)
    steps: int = 5  # quick: normalised projected-gradient steps per side
    batch: int = 500  # batch size of every forward/backward pass
    every: int = 1  # score every k-th epoch (1-based epochs k, 2k, ...; the last if none)
    lr: float = 0.1  # reference: plain-SGD learning rate of the layer copy
    method: str = "quick"  # quick | reference (the paper's solver; pair with subset=0 for all data)

    def validate(self, where: str = "sal") -> None:
        check_positive(where, **{"sal.rho": self.rho, "sal.steps": self.steps, "sal.batch": self.batch,
                                 "sal.every": self.every, "sal.lr": self.lr})
        check_nonnegative(where, **{"sal.subset": self.subset})
        for name in ("subset", "steps", "batch", "every"):
            if not isinstance(getattr(self, name), int):
                from certify.errors import UserError

                raise UserError(f"{where}: sal.{name} must be an integer, got {getattr(self, name)!r}")
        check_choice(where, "sal.method", self.method, METHODS)


def layer_names(model: nn.Module) -> list[str]:
    """Parameter names of every Conv2d / Linear weight, in module order."""
    return [f"{name}.weight" if name else "weight" for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and getattr(m, "weight", None) is not None]


def _frozen(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {k: v.detach() for k, v in model.named_parameters()}
    state.update({k: v.detach() for k, v in model.named_buffers()})
    return state


def _loss(model, state, name, w, x, y, batch, grad: bool):
    """Mean cross-entropy over (x, y) with layer `name` set to `w`; with grad, also d loss / d w."""
    n = len(x)
    device = w.device
    total = 0.0
    g = torch.zeros_like(w) if grad else None
    for i in range(0, n, batch):
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        if grad:
            wv = w.detach().requires_grad_(True)
            out = functional_call(model, {**state, name: wv}, (xb,))
            lb = F.cross_entropy(out, yb, reduction="sum") / n
            g += torch.autograd.grad(lb, wv)[0]
        else:
            with torch.no_grad():
                out = functional_call(model, {**state, name: w}, (xb,))
                lb = F.cross_entropy(out, yb, reduction="sum") / n
        total += float(lb.detach())
    return total, g


def _project(delta: torch.Tensor, r: float) -> torch.Tensor:
    norm = float(delta.norm())
    return delta * (r / norm) if norm > r else delta


def _quick_side(model, state, name, theta, x, y, cfg, r, sign, base, g0):
    """Extreme loss over `steps` normalised projected-gradient steps (sign +1 ascent, -1 descent).

    `g0` is the gradient at theta (shared by both sides).
    """
    step = 2.0 * r / cfg.steps
    delta = torch.zeros_like(theta)
    best = base
    for k in range(cfg.steps):
        if k:
            loss, g = _loss(model, state, name, theta + delta, x, y, cfg.batch, grad=True)
        else:
            loss, g = base, g0
        if k:
            best = max(best, loss) if sign > 0 else min(best, loss)
        gn = float(g.norm())
        if gn == 0.0 or not torch.isfinite(g).all():
            break  # flat in this layer: no direction to follow
        delta = _project(delta + sign * step * g / gn, r)
    else:
        loss, _ = _loss(model, state, name, theta + delta, x, y, cfg.batch, grad=False)
        best = max(best, loss) if sign > 0 else min(best, loss)
    return best


def _reference_side(model, state, name, theta, x, y, cfg, r, sign, base, gen):
    """The paper's solver: rounds of one full plain-SGD pass, rescaled into the ball, extreme kept."""
    w = theta.clone()
    best = base
    n = len(x)
    for _ in range(REFERENCE_ROUNDS):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch):
            idx = order[i:i + cfg.batch]
            xb, yb = x[idx].to(w.device), y[idx].to(w.device)
            wv = w.detach().requires_grad_(True)
            lb = F.cross_entropy(functional_call(model, {**state, name: wv}, (xb,)), yb)
            g = torch.autograd.grad(lb, wv)[0]
            w = w + sign * cfg.lr * g
        w = theta + _project(w - theta, r)
        loss, _ = _loss(model, state, name, w, x, y, cfg.batch, grad=False)
        best = max(best, loss) if sign > 0 else min(best, loss)
    return best


def sal_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: SalConfig, seed: int) -> list[float]:
    """SAL of every scored layer (order of `layer_names`) for the model's current weights.

    (x, y) is the data the loss is measured on (pass the fixed subset; it is used whole). Eval mode,
    other layers frozen, ||v|| <= rho * ||theta_l||. The base loss L(theta) is a fresh eval-mode loss on
    (x, y), not the reference's running training loss (a quirk of the reference code). The model's
    weights and mode are left as they were (functional_call; no parameter is written).
    """
    was_training = model.training
    model.eval()
    try:
        state = _frozen(model)
        names = layer_names(model)
        any_name = names[0] if names else None
        base = _loss(model, state, any_name, state[any_name], x, y, cfg.batch, grad=False)[0] if names else 0.0
        out = []
        for li, name in enumerate(names):
            theta = state[name]
            r = cfg.rho * float(theta.norm())
            if cfg.method == "quick":
                g0 = _loss(model, state, name, theta, x, y, cfg.batch, grad=True)[1]
                hi = _quick_side(model, state, name, theta, x, y, cfg, r, +1, base, g0)
                lo = _quick_side(model, state, name, theta, x, y, cfg, r, -1, base, g0)
            else:
                gen = torch.Generator().manual_seed(derive(seed, "sal-reference", li))
                hi = _reference_side(model, state, name, theta, x, y, cfg, r, +1, base, gen)
                gen = torch.Generator().manual_seed(derive(seed, "sal-reference", li))
                lo = _reference_side(model, state, name, theta, x, y, cfg, r, -1, base, gen)
            out.append(max(hi - base, base - lo, 0.0))
        return out
    finally:
        model.train(was_training)


def scored_epochs(n_epochs: int, every: int) -> list[int]:
    """1-based epochs scored: every k-th (k, 2k, ...), or just the last when k > n_epochs."""
    return [t for t in range(1, n_epochs + 1) if t % every == 0] or ([n_epochs] if n_epochs else [])


def subset_for(y: torch.Tensor, cfg: SalConfig, seed: int) -> torch.Tensor:
    """The fixed, seeded, stratified indices SAL is measured on (all when cfg.subset is 0)."""
    return stratified_draw(y, cfg.subset or len(y), derive(seed, "sal-subset"), "sal.subset")[0]


def sal_matrix(model: nn.Module, checkpoints: list[dict], x: torch.Tensor, y: torch.Tensor,
               cfg: SalConfig, seed: int) -> list[list[float]]:
    """SAL, layers x scored epochs, from per-epoch state dicts (checkpoints[t - 1] = after epoch t).

    Each checkpoint is loaded into a copy of `model` (the model itself is not touched); the data is
    the fixed stratified subset of (x, y) given by `subset_for`, the same for every epoch.
    """
    idx = subset_for(y, cfg, seed)
    xs, ys = x[idx], y[idx]
    work = copy.deepcopy(model)
    cols = []
    for t in scored_epochs(len(checkpoints), cfg.every):
        work.load_state_dict(checkpoints[t - 1])
        cols.append(sal_epoch(work, xs, ys, cfg, derive(seed, "sal-epoch", t)))
    return [list(row) for row in zip(*cols)] if cols else [[] for _ in layer_names(model)]


def two_means_1d(values) -> tuple[float, float]:
    """Exact 1-D 2-means (minimum within-cluster sum of squares over every split of the sorted values)."""
    v = sorted(float(a) for a in values)
    if len(v) < 2:
        return (v[0], v[0]) if v else (0.0, 0.0)
    best = None
    for i in range(1, len(v)):
        left, right = v[:i], v[i:]
        ml, mr = sum(left) / len(left), sum(right) / len(right)
        sse = sum((a - ml) ** 2 for a in left) + sum((a - mr) ** 2 for a in right)
        if best is None or sse < best[0] - 1e-15:
            best = (sse, ml, mr)
    return best[1], best[2]


def beta(sal_clean: list[list[float]]) -> float:
    """Mean over epochs of the midpoint of the two 2-means centres of the clean layers' SAL values."""
    cols = list(zip(*sal_clean))
    if not cols:
        return 0.0
    return sum(sum(two_means_1d(col)) / 2 for col in cols) / len(cols)


def lp(sal: list[list[float]], beta_value: float) -> float:
    """#LP: mean over epochs of the number of layers with SAL > beta."""
    cols = list(zip(*sal))
    if not cols:
        return 0.0
    return sum(sum(1 for s in col if s > beta_value) for col in cols) / len(cols)


def ud_section(sal_clean: list[list[float]], sal_protected: list[list[float]], cfg: SalConfig,
               profile: str, *, layer_names: list[str] | None = None,
               epochs_scored: list[int] | None = None) -> dict:
    """The report's `sal_ud` section (UD null, with the reason, when #LP(clean) = 0)."""
    b = beta(sal_clean)
    lp_c, lp_p = lp(sal_clean, b), lp(sal_protected, b)
    ud, reason = (lp_p / lp_c, None) if lp_c > 0 else (None, "#LP(clean) = 0: no clean layer has SAL above beta")
    if cfg.method == "quick":
        solver = (f"{cfg.steps} normalised projected-gradient steps per side (step 2r/{cfg.steps}), "
                  f"full-subset gradients, extreme loss over the iterates")
    else:
        solver = (f"{REFERENCE_ROUNDS} rounds of one full plain-SGD pass (lr {cfg.lr}) on a copy of the "
                  f"layer, rescaled into the ball, extreme loss kept")
    n_layers = len(sal_clean)
    return {
        "ud": ud, "ud_null_reason": reason, "lp_protected": lp_p, "lp_clean": lp_c, "beta": b,
        "rho": cfg.rho, "layers": n_layers, "profile": profile,
        "sal_clean": [list(map(float, r)) for r in sal_clean],
        "sal_protected": [list(map(float, r)) for r in sal_protected],
        "layer_names": list(layer_names) if layer_names is not None else None,
        "epochs_scored": list(epochs_scored) if epochs_scored is not None else None,
        "subset": cfg.subset, "every": cfg.every,
        "base_loss": "fresh eval-mode",
        "solver": solver,
        "note": (f"{n_layers} scored layers: with few layers (a small CNN) #LP takes few values and UD is "
                 f"coarse; compare UD across poisons of the same model only"),
    }
