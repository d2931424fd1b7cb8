"""Quick check of the SAL/UD, sliced-MI and covariance scores: clean vs `random`-poisoned models; or the
rank statistics of a table of poisons.

    python bench/scores_check.py [--dataset cifar10-mini] [--epochs 15] [--threads 2]
    python bench/scores_check.py --table reports/POISONS.md [--min-drop 0.1]

Trains the run's default model (`cnn`) on clean data and on `random`-released data (TrainConfig
epochs/128/0.05/flip), keeps per-epoch state dicts through `epoch_callback`, then prints UD(random)
(quick SAL profile: SalConfig() defaults, --every k), the MI gap(random) (MIConfig() defaults) and its
covariance section (both on training images, as the pipeline measures them), with the wall-clock time
each score took on this machine's threads. Seeds follow the pipeline's names.

`--table FILE` instead reads the first markdown table of FILE with the columns `poison`, `acc drop`,
`MI gap` and `covariance score` (POISONS.md's literature table; the clean control's row, `none…`, is
left out) and prints Spearman's rho of each score with the accuracy drop, with scipy's t-approximation
p, the permutation p and the 95 % bootstrap interval (certify.scores.ranking), over every poison and
over those whose drop exceeds --min-drop (the poisons that protect).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from attacks.base import POISONS, CraftContext
from certify.data import load_dataset
from certify.models import build_model
from certify.scores.covariance import covariance_section
from certify.scores.mutual_info import MIConfig, mi_from_features, paired_features
from certify.scores.ranking import spearman
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
    ap.add_argument("--table", help="print the rank statistics of this markdown file's table instead")
    ap.add_argument("--min-drop", type=float, default=0.1, help="--table: a poison protects above this drop")
    args = ap.parse_args(argv)
    if args.table:
        print(json.dumps(table_ranks(args.table, args.min_drop, args.seed), indent=1))
        return
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
    mi, cov, mi_s = {}, {}, {}
    for name in released:
        t0 = time.perf_counter()
        fc, fp, y = paired_features(models["none"], models[name], released["none"], released[name],
                                    data.y_train, mcfg, args.seed)
        mi[name] = mi_from_features(fc, fp, mcfg, args.seed)
        cov[name] = covariance_section(fc.numpy(), fp.numpy(), y.numpy())
        mi_s[name] = time.perf_counter() - t0

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
                                             "histogram_protected", "histogram_gap")} for name, s in mi.items()},
        "covariance": {name: {f: r(s[f]) for f in ("score", "total_score", "within_total_clean",
                                                    "within_total_protected")} for name, s in cov.items()},
        "mi_seconds": {k: round(v, 1) for k, v in mi_s.items()},
    }
    print(json.dumps(summary, indent=1))


def read_table(path: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of the first markdown table in `path` whose header holds `columns`, as header -> cell."""
    rows, header = [], None
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if cells is None:
            if rows:
                break
            header = None
            continue
        if header is None:
            header = cells if set(columns) <= set(cells) else None
        elif not set(cells[0]) <= set("-: "):
            rows.append(dict(zip(header, cells)))
    return rows


def _number(cell: str) -> float:
    return float(cell.replace("−", "-"))  # the tables write minus signs as U+2212


def table_ranks(path: str, min_drop: float, seed: int) -> dict:
    """Spearman of `MI gap` and `covariance score` with `acc drop` over the table's poisons (not the
    clean control), all of them and those with drop > min_drop."""
    cols = ("poison", "acc drop", "MI gap", "covariance score")
    rows = [r for r in read_table(path, cols) if not r["poison"].startswith("none")]
    out = {}
    for subset, keep in (("all", rows), (f"drop > {min_drop}", [r for r in rows if _number(r["acc drop"]) > min_drop])):
        drops = [_number(r["acc drop"]) for r in keep]
        out[subset] = {col: spearman([_number(r[col]) for r in keep], drops, [r["poison"] for r in keep], seed=seed)
                       for col in ("MI gap", "covariance score")}
    return out


if __name__ == "__main__":
    main()
