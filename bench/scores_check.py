"""Quick check of the SAL/UD and sliced-MI scores: clean vs `random`-poisoned models.

    python bench/scores_check.py [--dataset cifar10-mini] [--epochs 15] [--threads 2]

Trains the run's default model (`cnn`) on clean data and on `random`-released data (TrainConfig
epochs/128/0.05/flip), keeps per-epoch state dicts through `epoch_callback`, then prints UD(random)
(quick SAL profile: SalConfig() defaults, --every k) and the MI gap(random) (MIConfig() defaults), with the
wall-clock time each score took on this machine's threads. Seeds follow the pipeline's names.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from attacks.base import POISONS, CraftContext
from certify.data import load_dataset
from certify.models import build_model
from certify.scores.mutual_info import MIConfig, mi_section
from certify.scores.sal_ud import SalConfig, layer_names, sal_matrix, scored_epochs, ud_section
from certify.seeding import derive
from certify.training import TrainConfig, evaluate, train


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cifar10-mini")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, default=1, help="SAL: score every k-th epoch")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    device = torch.device("cpu")
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, flip=data.shape[0] == 3)

    def make_model(seed: int):
        return build_model(args.model, data.shape, data.num_classes, seed).to(device)

    params = POISONS.params("random", {})
    ctx = CraftContext(data.x_train, data.y_train, data.num_classes, make_model, cfg,
                       derive(args.seed, "poison", "random"), device)
    released = {"none": data.x_train, "random": POISONS.get("random").factory(ctx, params)}

    models, ckpts = {}, {}
    for name, x in released.items():
        vseed = derive(args.seed, "victim")
        m = make_model(vseed)
        ckpts[name] = []
        t0 = time.perf_counter()
        train(m, x, data.y_train, cfg, vseed,
              epoch_callback=lambda e, mod, c=ckpts[name]: c.append({k: v.clone() for k, v in mod.state_dict().items()}))
        acc = evaluate(m, data.x_test, data.y_test)
        print(f"train {name}: {time.perf_counter() - t0:.1f}s, test accuracy {acc:.3f}", flush=True)
        models[name] = m

    scfg = SalConfig(every=args.every)
    sal, sal_s = {}, {}
    for name, x in released.items():
        t0 = time.perf_counter()
        sal[name] = sal_matrix(models[name], ckpts[name], x, data.y_train, scfg, derive(args.seed, "sal", name))
        sal_s[name] = time.perf_counter() - t0
        print(f"SAL {name}: {sal_s[name]:.1f}s for {len(sal[name][0])} epochs x {len(sal[name])} layers", flush=True)
    ud = ud_section(sal["none"], sal["random"], scfg, "quick", layer_names=layer_names(models["none"]),
                    epochs_scored=scored_epochs(args.epochs, scfg.every))
    ud_none = ud_section(sal["none"], sal["none"], scfg, "quick")

    mcfg = MIConfig()
    t0 = time.perf_counter()
    mi_none = mi_section(models["none"], models["none"], data.x_test, data.y_test, mcfg, args.seed)
    mi_none_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mi_random = mi_section(models["none"], models["random"], data.x_test, data.y_test, mcfg, args.seed)
    mi_random_s = time.perf_counter() - t0

    def r(v):
        return None if v is None else round(v, 4)

    summary = {
        "dataset": args.dataset, "model": args.model, "epochs": args.epochs, "threads": args.threads, "sal_every": args.every,
        "sal_epochs_scored": scored_epochs(args.epochs, args.every),
        "ud_random": r(ud["ud"]), "ud_none": r(ud_none["ud"]), "lp_clean": ud["lp_clean"],
        "lp_random": ud["lp_protected"], "beta": r(ud["beta"]), "layers": ud["layers"],
        "sal_seconds_per_model": {k: round(v, 1) for k, v in sal_s.items()},
        "sal_mean_per_layer": {k: [r(sum(row) / len(row)) for row in v] for k, v in sal.items()},
        "mi": {name: {f: r(s[f]) for f in ("clean", "protected", "gap", "histogram_clean",
                                             "histogram_protected", "histogram_gap")}
               for name, s in (("none", mi_none), ("random", mi_random))},
        "mi_seconds": {"none": round(mi_none_s, 1), "random": round(mi_random_s, 1)},
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
