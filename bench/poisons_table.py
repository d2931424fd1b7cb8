"""Craft each poison on a dataset, train a victim on the released data, print a Markdown table.

    python bench/poisons_table.py cifar10-mini none miue em
    python bench/poisons_table.py digits em miue --set miue.rounds=2 --set em.max_rounds=1

For each poison: crafting time (wall clock, this machine's threads), the victim's test accuracy on
the clean test split (the run's default model and TrainConfig(): 15 epochs, batch 128, lr 0.05,
flip) and the budget measured on the released images (attacks.base.check_budget).
`none` is the clean control. Seeds follow the pipeline: derive(seed, "poison", name) for crafting,
derive(seed, "victim") for the victim (the same victim seed for every poison).
"""
from __future__ import annotations

import argparse
import ast
import sys
import time

import torch

from attacks.base import POISONS, CraftContext, check_budget
from certify.data import load_dataset
from certify.models import build_model
from certify.seeding import derive
from certify.training import TrainConfig, evaluate, train


def parse_sets(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition("=")
        poison, _, field = key.partition(".")
        if not field or not value:
            raise SystemExit(f"--set {item!r}: expected POISON.FIELD=VALUE")
        try:
            v = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            v = value
        out.setdefault(poison, {})[field] = v
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("poisons", nargs="+")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="victim epochs")
    ap.add_argument("--set", action="append", default=[], metavar="POISON.FIELD=VALUE",
                    help="parameter override (repeatable), e.g. miue.steps=3")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = parse_sets(args.set)
    data = load_dataset(args.dataset)
    device = torch.device("cpu")
    cfg = TrainConfig(epochs=args.epochs, flip=data.shape[0] == 3)

    def make_model(seed: int):
        return build_model(args.model, data.shape, data.num_classes, seed).to(device)

    rows = []
    for name in args.poisons:
        params = POISONS.params(name, overrides.get(name, {}))
        seed = derive(args.seed, "poison", name)
        ctx = CraftContext(data.x_train, data.y_train, data.num_classes, make_model, cfg, seed, device)
        t0 = time.perf_counter()
        released = POISONS.get(name).factory(ctx, params)
        craft_s = time.perf_counter() - t0
        norm = type(params).norm if params is not None else "none"
        eps = params.epsilon if params is not None else 0.0
        measured = check_budget(name, data.x_train, released, norm, eps)
        victim = make_model(derive(args.seed, "victim"))
        train(victim, released, data.y_train, cfg, derive(args.seed, "victim"), desc=f"victim {name}")
        acc = evaluate(victim, data.x_test, data.y_test, cfg.eval_batch)
        budget = f"{norm} {measured * 255:.2f}/255" if norm == "linf" else f"{norm} {measured:.3f}"
        rows.append((name, craft_s, acc, budget))
        print(f"{name}: craft {craft_s:.1f}s, test accuracy {acc:.3f}, {budget}", file=sys.stderr, flush=True)

    print(f"\n{args.dataset}, model {args.model}, victim {cfg.epochs} epochs, seed {args.seed}, "
          f"{args.threads} threads\n")
    print("| poison | craft s | test accuracy | budget measured |")
    print("| --- | --- | --- | --- |")
    for name, craft_s, acc, budget in rows:
        print(f"| {name} | {craft_s:.1f} | {acc:.3f} | {budget} |")


if __name__ == "__main__":
    main()
