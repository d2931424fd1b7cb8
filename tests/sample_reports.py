"""Synthetic report.json documents for the report, gate and picture tests (a helper module, not a
test module): `make_report` builds one run's report (optionally of K replicate seeds, `add_seeds`,
and of a victim panel, `add_victims`), from hand-set accuracies and seeded certificate draws."""
from __future__ import annotations

import numpy as np

from certify.certificate import bounds
from certify.report.schema import SCHEMA_ID

GRID = [0.05, 0.1, 0.25, 0.5, 1.0, 1.5]
SIGMA = 0.02
CRAFTING = "cnn"  # the crafting model of a report with victims
VICTIM_TRAIN = {"epochs": 15, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005,
                "flip": True, "crop": 0, "eval_batch": 500}


def _certificate(mean: float, seed: int) -> dict:
    draws = np.random.default_rng(seed).normal(mean, 0.03, 200).clip(0, 1)
    cert = {
        "sigma": SIGMA, "q": 0.9, "alpha": 0.01,
        "surrogate": "rwp", "surrogate_recipe": {"levels": [0.0, 0.01, 0.02], "epochs": 12},
        "surrogate_accuracy": mean + 0.05,
        "sigma_rule": {"rule": "auto", "tried": [{"sigma": 0.005, "median_ratio": 0.98},
                                                 {"sigma": 0.01, "median_ratio": 0.96},
                                                 {"sigma": 0.02, "median_ratio": 0.88},
                                                 {"sigma": 0.05, "median_ratio": 0.56}]},
        "theta_norm": 41.3, "independent_distance": 27.9,
        "eta_scale": "eta is an absolute l2 radius over all trainable parameters",
    }
    cert.update(bounds.summarize(draws, 0.9, 0.01, SIGMA, GRID))
    cert["draws"] = [float(a) for a in draws]
    return cert


def _poison(name: str, clean: float, protected: float, seed: int) -> dict:
    control = name == "none"
    return {
        "budget": ({"norm": "none", "epsilon": 0, "measured": 0} if control
                   else {"norm": "linf", "epsilon": 8 / 255, "measured": 8 / 255}),
        "empirical": {
            "clean_accuracy": clean, "protected_accuracy": protected, "peak_protected_accuracy": protected + 0.03,
            "defenses": {"jpeg": {"accuracy": protected + 0.1, "peak_accuracy": protected + 0.12},
                         "grayscale": {"accuracy": protected + 0.05, "peak_accuracy": protected + 0.06}},
            "clean_history": [0.2, 0.35, 0.45, clean],
            "protected_history": [0.15, 0.25, protected + 0.03, protected],
        },
        "certificate": _certificate(protected, seed),
        "sal_ud": {"ud": 1.0 if control else 0.42, "ud_null_reason": None, "lp_protected": 0.3, "lp_clean": 0.3,
                   "beta": 0.5, "rho": 0.05, "layers": 3, "profile": "quick",
                   "sal_protected": [[0.1 * (i + j) for j in range(5)] for i in range(3)],
                   "sal_clean": [[0.05 * (i + 2 * j) for j in range(5)] for i in range(3)]},
        "mutual_information": {"estimator": "ksg", "projections": 128, "images": 1000,
                               "clean": 0.8, "protected": 0.8 if control else 0.35,
                               "gap": 0.0 if control else 0.45, "histogram_gap": 0.0 if control else 0.3},
        "recovery": {"pgd": {"start": "surrogate", "bn": "frozen", "constraint": "ball",
                             "curve": [{"eta": r * SIGMA, "eta_over_sigma": r, "accuracy": protected + 0.02 * r}
                                       for r in GRID]}},
    }


def _interval(values: list[float], n_test: int) -> list[float]:
    """The contract's 95 % interval: Clopper-Pearson over the test images for one seed, Student-t over several."""
    from scipy import stats
    from statsmodels.stats.proportion import proportion_confint

    if len(values) == 1:
        low, high = proportion_confint(round(values[0] * n_test), n_test, alpha=0.05, method="beta")
    else:
        h = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
        low, high = np.mean(values) - h, np.mean(values) + h
    return [max(0.0, float(low)), min(1.0, float(high))]


def summarize(values: list[float], n_test: int) -> tuple[float, list[float]]:
    return float(np.mean(values)), _interval(values, n_test)


def add_seeds(report: dict, k: int) -> None:
    """The fields of a run with `k` replicate seeds (contract-replicates.md): the first seed has the
    report's numbers, seed i's accuracies lie 0, +, -, 2+, 2-, ... 0.015 away from them (1.5 times
    that under a defense), its certified bounds 0.01·i below; the means, intervals and the
    certificate's summary over the seeds follow from those."""
    seeds = [report["seed"] + i for i in range(k)]
    report["seeds"] = seeds
    n = report["dataset"]["n_test"]
    offsets = [0.015 * ((i + 1) // 2) * (1 if i % 2 else -1) for i in range(k)]
    for sec in report["poisons"].values():
        emp, cert = sec["empirical"], sec["certificate"]
        reps = [{"seed": seed, **_seed_of(emp, o),
                 "certified": {format(pt["eta_over_sigma"], "g"): None if pt["learnability"] is None
                               else max(0.0, pt["learnability"] - 0.01 * i) for pt in cert["curve"]},
                 "recovery": {m: max(pt["accuracy"] for pt in r["curve"]) + o for m, r in sec["recovery"].items()}}
                for i, (seed, o) in enumerate(zip(seeds, offsets))]
        for arch, v in (sec.get("victims") or {}).items():  # each victim's seeds lie as the crafting model's
            for rep, o in zip(reps, offsets):
                rep.setdefault("victims", {})[arch] = _seed_of(v, o)
            _summarize_seeds(v, [rep["victims"][arch] for rep in reps], n)
        sec["replicates"] = reps
        _summarize_seeds(emp, reps, n)
        emp.update(interval_method="clopper-pearson" if k == 1 else "student-t", seeds=k, confidence=0.95)
        for m, r in sec["recovery"].items():
            r["best_accuracy"], r["best_interval"] = summarize([rep["recovery"][m] for rep in reps], n)
        cert.update(replicates=k, replicate_alpha=cert["alpha"] / k)  # the first seed's bounds are the largest


def _seed_of(acc: dict, o: float) -> dict:
    """One seed's accuracies (a replicate entry's fields), `o` away from `acc`'s (1.5·o under a defense)."""
    return {"clean_accuracy": acc["clean_accuracy"] + o, "protected_accuracy": acc["protected_accuracy"] + o,
            "peak_protected_accuracy": acc["peak_protected_accuracy"] + o,
            "defenses": {d: v["accuracy"] + 1.5 * o for d, v in acc["defenses"].items()},
            "defenses_peak": {d: v["peak_accuracy"] + 1.5 * o for d, v in acc["defenses"].items()}}


def _summarize_seeds(acc: dict, reps: list[dict], n_test: int) -> None:
    """`acc`'s accuracies (an empirical section or a victim's) become the means over `reps`, with intervals."""
    for key in ("clean", "protected", "peak_protected"):
        acc[f"{key}_accuracy"], acc[f"{key}_interval"] = summarize([r[f"{key}_accuracy"] for r in reps], n_test)
    for d, v in acc["defenses"].items():
        v["accuracy"], v["interval"] = summarize([r["defenses"][d] for r in reps], n_test)
        v["peak_accuracy"], v["peak_interval"] = summarize([r["defenses_peak"][d] for r in reps], n_test)


def _victim(emp: dict, j: int) -> dict:
    """The j-th architecture's numbers that is not the crafting model (j >= 1): a clean model 0.05·j better
    than the crafting model's, a protection that transfers less (0.1·j more accuracy on the release, and
    on the clean data itself: the clean control's victims keep protected = clean), a training-set
    accuracy that says whether it fits."""
    up = 0.05 * j
    protected = min(1.0, emp["protected_accuracy"] + (up if emp["protected_accuracy"] == emp["clean_accuracy"]
                                                       else 2 * up))
    return {"clean_accuracy": emp["clean_accuracy"] + up, "protected_accuracy": protected,
            "peak_protected_accuracy": protected + 0.03,
            "clean_train_accuracy": 0.99 - 0.2 * (j - 1), "protected_train_accuracy": 0.98,
            "defenses": {d: {"accuracy": v["accuracy"] + up, "peak_accuracy": v["peak_accuracy"] + up}
                         for d, v in emp["defenses"].items()}}


def add_victims(report: dict, architectures) -> None:
    """The fields of a run with `--victims` (before `add_seeds`): the panel, each architecture's training,
    and per poison each victim's accuracies; the crafting model's, where it is among them, are its own."""
    report["victims"] = {"crafting_model": CRAFTING, "architectures": list(architectures),
                         "training": {a: dict(VICTIM_TRAIN, epochs=VICTIM_TRAIN["epochs"] + 5 * i)
                                      for i, a in enumerate(architectures)}}
    others = [a for a in architectures if a != CRAFTING]
    for sec in report["poisons"].values():
        emp = sec["empirical"]
        own = {k: emp[k] for k in ("clean_accuracy", "protected_accuracy", "peak_protected_accuracy")}
        own.update(clean_train_accuracy=0.99, protected_train_accuracy=0.99,
                   defenses={d: dict(v) for d, v in emp["defenses"].items()})
        sec["victims"] = {a: own if a == CRAFTING else _victim(emp, others.index(a) + 1) for a in architectures}


def make_report(dataset_name: str = "cifar10-mini", poisons=("none", "miue"), seeds: int | None = None,
                victims=None) -> dict:
    """A synthetic report; with `seeds` (K >= 1) one of a run with K replicate seeds, else one from
    before replicates; with `victims` (architectures, the crafting model `CRAFTING` among them or not)
    one of a run with that victim panel."""
    report = _base_report(dataset_name, poisons)
    if victims is not None:
        add_victims(report, victims)
    if seeds is not None:
        add_seeds(report, seeds)
    return report


def _base_report(dataset_name: str, poisons) -> dict:
    values = {"none": (0.535, 0.535, 1), "miue": (0.535, 0.21, 2)}
    return {
        "schema": SCHEMA_ID,
        "created": "2025-01-02T03:04:05+00:00",
        "command": "certify run --poison miue --samples 200 --sigma 0.02 --seed 0",
        "seed": 0,
        "config": {"poisons": list(poisons), "samples": 200, "sigma": SIGMA, "q": 0.9, "alpha": 0.01},
        "environment": {"python": "3.12.1", "torch": "2.14.1", "device": "cpu", "executor": "serial",
                        "workers": 2},
        "dataset": {"name": dataset_name, "n_train": 5000, "n_test": 1000, "shape": [3, 32, 32], "classes": 10},
        "model": {"arch": "cnn-w8", "parameters": 6530},
        "poisons": {p: _poison(p, *values.get(p, (0.5, 0.3, 3))) for p in poisons},
        "timings": {"craft": 12.5, "train": 40.1, "certify": 8.25},
    }
