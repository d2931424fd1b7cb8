"""Accuracies of weight-perturbed copies of one model: the Monte-Carlo draws of the certificate.

Draw j adds sigma * eps_j to every trainable parameter (conv/linear weights and biases, BN affine),
never to BN buffers, in eval mode. eps_j depends only on (seed, j), so any split of the draws
across chunks, workers or resumes gives the same draws in the same order. Weights are never
drifted: each draw evaluates fresh tensors theta + sigma * eps_j.

A pass of one draw of a small model is many small kernel calls, with 8-16 channels in the default
CNN (half an AVX-512 vector). On the CPU a model that is a plain chain of convs, linears and
per-channel layers therefore evaluates a block of draws as one stacked network (`Stacked`): every
output is the same dot product as in the draw's own pass, and the accuracies are the loop's.
"""
from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.func import functional_call, vmap

from certify.device import channels_last
from certify.models import GlobalAvgPool, trainable
from certify.seeding import generator


def draw_noise(params: dict[str, torch.Tensor], seed: int, j: int) -> dict[str, torch.Tensor]:
    """eps_j for every trainable parameter; drawn on the CPU so every device sees the same numbers."""
    g = generator(seed, "draw", j)
    return {n: torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for n, p in params.items()}


def perturbed(params, sigma: float, seed: int, j: int) -> dict[str, torch.Tensor]:
    noise = draw_noise(params, seed, j)
    return {n: channels_last(p + sigma * noise[n]) for n, p in params.items()}


class MaxPoolReLU(nn.Module):
    """ReLU(max_pool2d(h, 2)) for 2x2/stride-2 pooling, bit-identical to max_pool2d then ReLU.

    max commutes with the (monotone) ReLU, so ReLU runs on a quarter of the values; the pool is two
    elementwise maxima over the channels-last view, which measured ~1.5x faster per draw than
    oneDNN's pooling kernel at the 8-16 channels of the default CNN (one thread per worker).
    """

    def __init__(self, relu: bool):
        super().__init__()
        self.relu = relu

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, c, height, width = h.shape
        if height % 2 or width % 2:
            out = nn.functional.max_pool2d(h, 2)
        else:
            t = h.permute(0, 2, 3, 1).reshape(n, height // 2, 2, width // 2, 2, c)
            rows = torch.maximum(t[:, :, 0], t[:, :, 1])
            out = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).permute(0, 3, 1, 2)
        return torch.relu(out) if self.relu else out


def _is_pool2x2(m: nn.Module) -> bool:
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return (isinstance(m, nn.MaxPool2d) and pair(m.kernel_size) == (2, 2) and pair(m.stride) == (2, 2)
            and pair(m.padding) == (0, 0) and pair(m.dilation) == (1, 1) and not m.ceil_mode
            and not m.return_indices)


def draws_per_pass(device: str) -> int:
    """Draws per pass: 16 through vmap on a GPU; 8 stacked on the CPU (chain models; others loop),
    where 4, 8 and 16 measured within 4 % of each other."""
    return 8 if device == "cpu" else 16


class _LeafTracer(fx.Tracer):
    """fx's tracer, with the project's GlobalAvgPool kept as one call (a chain step of `Stacked`)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, GlobalAvgPool) or super().is_leaf_module(m, qualname)


class InferenceForm:
    """The model rewritten for fast eval-mode draws, with the same outputs.

    Every eval-mode BatchNorm that directly follows a conv is folded into that conv (exact algebra:
    eval-mode BN is a per-channel affine map; one memory pass less per layer), and every 2x2 max-pool
    becomes `MaxPoolReLU`, absorbing a ReLU directly before or after it. The fold is recomputed from each
    draw's perturbed parameters, so the noise still lands on the BN affine parameters and never on
    the running statistics. Models fx cannot trace run as they are. `stacked` is the rewritten model
    as a `Stacked` chain, or None where it is not one.
    """

    def __init__(self, model: nn.Module):
        self.pairs: list[tuple[str, str]] = []
        self.pools: list[str] = []
        self.stacked: Stacked | None = None
        try:
            graph = _LeafTracer().trace(model)
        except Exception:
            self.module = model
            return
        modules = dict(model.named_modules())
        calls = Counter(n.target for n in graph.nodes if n.op == "call_module")

        def module_of(node, kind):
            # a module called from several places (a shared ReLU, say) is left alone: rewriting it
            # for one call site would change the others
            return (isinstance(node, fx.Node) and node.op == "call_module"
                    and isinstance(modules[node.target], kind) and calls[node.target] == 1)

        replace: dict[str, nn.Module] = {}
        for node in graph.nodes:
            prev = node.args[0] if node.args else None
            if module_of(node, nn.BatchNorm2d) and module_of(prev, nn.Conv2d) and len(prev.users) == 1:
                self.pairs.append((prev.target, node.target))
                replace[node.target] = nn.Identity()
            if module_of(node, nn.MaxPool2d) and _is_pool2x2(modules[node.target]):
                # a ReLU on either side (the default CNN pools first); ReLU twice is ReLU once
                after = next(iter(node.users)) if len(node.users) == 1 else None
                relus = [n for n, alone in ((prev, prev is not None and len(prev.users) == 1), (after, True))
                         if alone and module_of(n, nn.ReLU)]
                replace.update({n.target: nn.Identity() for n in relus})
                replace[node.target] = MaxPoolReLU(relu=bool(relus))
                self.pools.append(node.target)
        self.module = copy.deepcopy(model).eval()
        self.eps = {bn: modules[bn].eps for _, bn in self.pairs}
        for name, new in replace.items():
            parent, _, leaf = name.rpartition(".")
            setattr(self.module.get_submodule(parent) if parent else self.module, leaf, new)
        self.stacked = Stacked.of(self.module, graph)

    def state(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]):
        if not self.pairs:
            return params, buffers
        params, buffers = dict(params), dict(buffers)
        for conv, bn in self.pairs:
            gamma, beta = params.pop(f"{bn}.weight"), params.pop(f"{bn}.bias")
            mean, var = buffers.pop(f"{bn}.running_mean"), buffers.pop(f"{bn}.running_var")
            buffers.pop(f"{bn}.num_batches_tracked", None)
            scale = gamma / torch.sqrt(var + self.eps[bn])
            bias = params.get(f"{conv}.bias")
            bias = (bias - mean) if bias is not None else -mean
            params[f"{conv}.weight"] = channels_last(params[f"{conv}.weight"] * scale.view(-1, 1, 1, 1))
            params[f"{conv}.bias"] = bias * scale + beta
        return params, buffers


class Stacked:
    """G draws of a chain model evaluated as one network on a shared batch of images.

    Activations hold the draws side by side: B x G*C x H x W (draw-major channels) before the
    flatten, G x B x F after it. The first conv sees the same images in every draw, so it is one
    conv with the G kernels concatenated (G*C_out output channels fill the vector registers that 8
    channels leave half empty); later convs are grouped convs with G times their own groups; a
    linear on the shared input is one matmul with the concatenated weights, on stacked features a
    batched matmul; ReLU and pooling act per channel and run unchanged. Each output channel is the
    same dot product as in the draw's own pass.
    """

    POOLS = (nn.MaxPool2d, MaxPoolReLU, nn.AdaptiveAvgPool2d)

    def __init__(self, steps: list[tuple[str, str, nn.Module]]):
        self.steps = steps  # (kind, module name, module), in call order

    @classmethod
    def of(cls, module: nn.Module, graph: fx.Graph) -> Stacked | None:
        """The chain of `module` (rewritten, with `graph` traced from its original), or None where the
        graph is anything but input -> supported modules one after another -> G x B x classes."""
        steps, prev, shared, flat = [], None, True, False
        for node in graph.nodes:
            if node.op == "placeholder" and prev is None:
                prev = node
                continue
            if node.op == "output":
                return cls(steps) if node.args == (prev,) and flat and not shared else None
            if node.op != "call_module" or node.args != (prev,) or node.kwargs:
                return None
            m = module.get_submodule(node.target)
            if isinstance(m, nn.Identity):
                pass
            elif isinstance(m, nn.ReLU) or isinstance(m, cls.POOLS) and not flat:
                steps.append(("each", node.target, m))
            elif (isinstance(m, nn.Conv2d) and not flat and m.padding_mode == "zeros"
                  and not (shared and m.groups > 1)):  # groups of a shared input would mix draws
                steps.append(("conv-shared" if shared else "conv", node.target, m))
                shared = False
            elif isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) == (1, -1) and not flat:
                steps.append(("flatten" if shared else "flatten-stacked", node.target, m))
                flat = True
            elif isinstance(m, GlobalAvgPool) and not flat:  # a per-channel mean, then the flatten
                steps += [("each", node.target, m), ("flatten" if shared else "flatten-stacked", node.target, m)]
                flat = True
            elif isinstance(m, nn.Linear) and flat:
                steps.append(("linear-shared" if shared else "linear", node.target, m))
                shared = False
            else:
                return None
            prev = node
        return None

    def weights(self, states: list[dict[str, torch.Tensor]]) -> dict[str, tuple]:
        """Each conv/linear's weight and bias (None without one) for the draws' (folded) parameters."""
        out = {}
        for kind, name, _ in self.steps:
            if kind.startswith(("conv", "linear")):
                w = [s[f"{name}.weight"] for s in states]
                b = [s[f"{name}.bias"] for s in states] if f"{name}.bias" in states[0] else None
                join = torch.stack if kind == "linear" else torch.cat
                out[name] = (channels_last(join(w)), join(b) if b else None)
        return out

    def logits(self, weights: dict[str, tuple], x: torch.Tensor, g: int) -> torch.Tensor:
        """G x B x classes for `g` draws' `weights` on the images `x`."""
        h = x
        for kind, name, m in self.steps:
            if kind == "each":
                h = m(h)
            elif kind == "flatten":
                h = h.flatten(1)
            elif kind == "flatten-stacked":
                h = h.reshape(len(h), g, -1).transpose(0, 1)
            elif kind.startswith("conv"):
                groups = m.groups if kind == "conv-shared" else m.groups * g
                h = F.conv2d(h, *weights[name], m.stride, m.padding, m.dilation, groups)
            elif kind == "linear-shared":
                h = F.linear(h, *weights[name]).view(len(h), g, -1).transpose(0, 1)
            else:
                w, b = weights[name]
                wt = w.transpose(1, 2)
                h = torch.bmm(h, wt) if b is None else torch.baddbmm(b.unsqueeze(1), h, wt)
        return h


@torch.inference_mode()
def draw_accuracies(model: nn.Module, sigma: float, seed: int, start: int, stop: int,
                    x: torch.Tensor, y: torch.Tensor, eval_batch: int = 500,
                    draws_per_pass: int = 1) -> np.ndarray:
    """Accuracy on all of (x, y) for draws start..stop-1, in draw order.

    `draws_per_pass` > 1 evaluates that many draws in one pass. On a GPU through vmap over the
    stacked parameters, `eval_batch` images per pass. On the CPU a chain model as `Stacked`, about
    `eval_batch` image-draws per pass (activations as small as one draw's pass); any other model
    one draw at a time, as vmap measured slower there.
    """
    model.eval()
    device = next(model.parameters()).device
    params = trainable(model)
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    fast = InferenceForm(model)
    x, y = channels_last(x.to(device)), y.to(device)
    stacked = fast.stacked if draws_per_pass > 1 and device.type == "cpu" else None
    vmapped = draws_per_pass > 1 and device.type != "cpu"
    per_pass = draws_per_pass if stacked or vmapped else 1
    out = np.empty(stop - start, dtype=np.float64)
    for lo in range(start, stop, per_pass):
        hi = min(stop, lo + per_pass)
        states = [fast.state(perturbed(params, sigma, seed, j), buffers) for j in range(lo, hi)]
        if stacked:
            correct = _stacked_correct(stacked, [p for p, _ in states], x, y, max(1, eval_batch // (hi - lo)))
        elif vmapped:
            correct = _vmap_correct(fast.module, states, x, y, eval_batch)
        else:
            correct = _correct(fast.module, states[0], x, y, eval_batch)
        out[lo - start:hi - start] = correct.cpu().numpy() / len(x)
    return out


def _correct(module: nn.Module, state, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
    """Correct predictions of one draw: shape (1,)."""
    correct = torch.zeros(1, dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch):
        correct += (functional_call(module, state, (x[i:i + batch],)).argmax(-1) == y[i:i + batch]).sum()
    return correct


def _stacked_correct(stacked: Stacked, params: list[dict], x: torch.Tensor, y: torch.Tensor,
                     batch: int) -> torch.Tensor:
    """Correct predictions of each of the draws with (folded) `params`, `batch` images per pass."""
    weights = stacked.weights(params)
    correct = torch.zeros(len(params), dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch):
        correct += (stacked.logits(weights, x[i:i + batch], len(params)).argmax(-1) == y[i:i + batch]).sum(1)
    return correct


def _vmap_correct(module: nn.Module, states: list, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
    """Correct predictions of each draw, vmapped over their stacked parameters."""
    # the folded form here too: vmap's batch norm fails on CUDA (torch 2.11 queries the layout)
    stacked = {n: torch.stack([p[n].contiguous() for p, _ in states]) for n in states[0][0]}
    plain = {n: b.contiguous() for n, b in states[0][1].items()}  # buffers are never perturbed

    def forward(p, xb):
        return functional_call(module, (p, plain), (xb,))

    batched = vmap(forward, in_dims=(0, None))
    correct = torch.zeros(len(states), dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch):
        correct += (batched(stacked, x[i:i + batch].contiguous()).argmax(-1) == y[i:i + batch]).sum(1)  # draws x batch
    return correct
