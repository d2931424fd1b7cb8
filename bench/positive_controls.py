"""Positive controls: is each poison's perturbation δ learnable on its own, and does each model-based
poison's crafting loss converge?

    python bench/positive_controls.py --device cuda --out reports/positive-controls.json
    python bench/positive_controls.py --dataset digits --delta lsp,random --crafting em

(a) δ-only learnability. δ = release - clean image. The victim (the dataset's default `--model` and
train recipe, as `certify run` would use; `--model` / `--train` override) is trained on δ-only images
of a stratified 80 % of the training split and tested on δ-only images of the other 20 %:
  gray:  0.5 + δ, clipped to [0, 1];
  other: δ added to a random image of another class (the image's content argues against its label).
A shortcut poison's δ is learnable (high held-out accuracy); `random` (per-image noise) is the
negative control (chance). A poison whose δ is learnable alone but whose release still trains to
clean accuracy points at the victim, not the poison.

(b) crafting loss per round, with the round cap raised (`--rounds-factor`) and early stopping off,
so the curve shows whether it plateaus. The attacks expose no loss curve, so this script wraps the
per-round functions the crafting loops call (miue: `delta_steps`, after which the MI-UE loss on
x + δ is measured; em / pue: `evaluate`, beside which the cross-entropy on x + δ is measured). The
wrappers read the model and δ only: the crafted δ is the one the unwrapped loop would give.
"""
from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import attacks.em
import attacks.miue
import attacks.pue
from attacks.base import POISONS, CraftContext
from certify.config import load_config
from certify.data import load_dataset
from certify.models import build_model
from certify.seeding import derive, stratified_draw
from certify.training import evaluate, train

GRAY = 0.5
HELD_OUT = 0.2
# per poison: the round-cap field raised by --rounds-factor and the early-stop field switched off
ROUND_FIELDS = {"miue": ("rounds", {}), "em": ("max_rounds", {"target_accuracy": 1.0}),
                "pue": ("max_rounds", {"stop_error": 0.0})}


def other_class_images(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For each image, a random image of a different class (redrawn until the class differs)."""
    pick = torch.randint(0, len(x), (len(x),), generator=gen)
    same = y[pick] == y
    while same.any():
        pick[same] = torch.randint(0, len(x), (int(same.sum()),), generator=gen)
        same = y[pick] == y
    return x[pick]


def delta_only_sets(x: torch.Tensor, y: torch.Tensor, released: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    delta = released - x
    gen = torch.Generator().manual_seed(seed)
    return {"gray": (GRAY + delta).clamp(0, 1), "other": (other_class_images(x, y, gen) + delta).clamp(0, 1)}


def delta_learnability(name: str, dataset: str, data, make_model, train_cfg, seed: int, device) -> dict:
    params = POISONS.params(name, dataset=dataset)
    uses_model = params is None or type(params).uses_model
    ctx = CraftContext(data.x_train, data.y_train, data.num_classes, make_model if uses_model else None,
                       train_cfg if uses_model else None, derive(seed, "poison", name), device)
    t0 = time.perf_counter()
    released = POISONS.get(name).factory(ctx, params)
    row = {"craft_seconds": round(time.perf_counter() - t0, 1)}
    held, _ = stratified_draw(data.y_train, HELD_OUT, derive(seed, "positive-controls", "held-out"), "held-out")
    fit = torch.ones(len(data.y_train), dtype=torch.bool)
    fit[held] = False
    victim_seed = derive(seed, "victim")
    for variant, xs in delta_only_sets(data.x_train, data.y_train, released, derive(seed, "other", name)).items():
        model = make_model(victim_seed)
        train(model, xs[fit], data.y_train[fit], train_cfg, victim_seed, desc=f"{name} δ-{variant}")
        row[variant] = {"train_accuracy": evaluate(model, xs[fit], data.y_train[fit], train_cfg.eval_batch),
                        "held_out_accuracy": evaluate(model, xs[~fit], data.y_train[~fit], train_cfg.eval_batch)}
        print(f"{name} δ-{variant}: held-out {row[variant]['held_out_accuracy']:.3f}", flush=True)
    return row


def _mean_loss(model, x, delta, y, loss, batch: int = 512) -> float:
    """Mean of `loss` over fixed shuffled batches of x + δ: shuffled, because a split stored by class
    (cifar10-mini's) gives batches of one class, where MI-UE's contrastive loss is 0 by definition."""
    dev = next(model.parameters()).device
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            total += float(loss(model, (x[idx] + delta[idx]).clamp(0, 1).to(dev), y[idx].to(dev))) * len(idx)
    return total / len(x)


def crafting_curve(name: str, dataset: str, data, make_model, train_cfg, seed: int, device, factor: int) -> dict:
    """The crafting loss after every round, the round cap `factor` times the default."""
    cap, off = ROUND_FIELDS[name]
    default = POISONS.params(name, dataset=dataset)
    params = POISONS.params(name, {cap: getattr(default, cap) * factor, **off}, dataset=dataset)
    curve: list[dict] = []
    module = getattr(attacks, name)
    if name == "miue":
        wrapped = module.delta_steps

        def hook(model, x, y, delta, p, *rest):
            new = wrapped(model, x, y, delta, p, *rest)
            mi = _mean_loss(model, x, new, y, lambda m, xb, yb: attacks.miue.miue_loss(m, xb, yb, p.tau, p.zeta))
            curve.append({"round": len(curve) + 1, "loss": round(mi, 4)})
            return new
        attr = "delta_steps"
    else:
        wrapped = module.evaluate

        def hook(model, released, y, batch):
            acc = wrapped(model, released, y, batch)
            ce = _mean_loss(model, released, torch.zeros_like(released), y,
                            lambda m, xb, yb: F.cross_entropy(m(xb), yb))
            curve.append({"round": len(curve) + 1, "loss": round(ce, 4), "craft_accuracy": round(acc, 4)})
            return acc
        attr = "evaluate"
    setattr(module, attr, hook)
    try:
        ctx = CraftContext(data.x_train, data.y_train, data.num_classes, make_model, train_cfg,
                           derive(seed, "poison", name), device)
        t0 = time.perf_counter()
        POISONS.get(name).factory(ctx, params)
    finally:
        setattr(module, attr, wrapped)
    print(f"{name} crafting loss: {[c['loss'] for c in curve]}", flush=True)
    return {"loss": "miue_loss (MI-UE objective) on x + δ" if name == "miue" else "cross-entropy on x + δ",
            "default_rounds": getattr(default, cap), "rounds_run": getattr(params, cap),
            "seconds": round(time.perf_counter() - t0, 1), "curve": curve}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cifar10-mini")
    ap.add_argument("--delta", default="lsp,ops,ar,random,em,miue", help="poisons for (a); '' for none")
    ap.add_argument("--crafting", default="miue,em", help="model-based poisons for (b); '' for none")
    ap.add_argument("--rounds-factor", type=int, default=2)
    ap.add_argument("--model", help="victim and crafting model (default: the dataset's `--model` default)")
    ap.add_argument("--train", action="append", default=[], metavar="FIELD=VALUE",
                    help="victim train-recipe override (repeatable), e.g. epochs=30, flip=False")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="reports/positive-controls.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = {k: ast.literal_eval(v) for k, _, v in (item.partition("=") for item in args.train)}
    cfg = load_config(overrides={"dataset": args.dataset, "model": args.model, "train": recipe})
    train_cfg = cfg.train
    data = load_dataset(args.dataset)
    device = torch.device(args.device)

    def make_model(s: int):
        return build_model(cfg.model, data.shape, data.num_classes, s).to(device)

    result = {"dataset": args.dataset, "model": cfg.model, "train": vars(train_cfg), "seed": args.seed,
              "device": args.device, "held_out_fraction": HELD_OUT, "delta_only": {}, "crafting": {}}
    out = Path(args.out)
    for name in filter(None, args.delta.split(",")):
        result["delta_only"][name] = delta_learnability(name, args.dataset, data, make_model, train_cfg, args.seed, device)
        out.write_text(json.dumps(result, indent=1) + "\n")
    for name in filter(None, args.crafting.split(",")):
        result["crafting"][name] = crafting_curve(name, args.dataset, data, make_model, train_cfg, args.seed, device,
                                                  args.rounds_factor)
        out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
