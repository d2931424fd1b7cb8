"""Replicate seeds (`--seeds K`): replicate i of a run is the same run at seed S + i, so every seeded
choice in it (crafting, the clean and protected models, defenses, the σ rule, surrogate, draws,
SAL/MI subsets, recovery) is drawn again, while the data stay those of seed S. Replicates are
ordinary tasks of the run's graph: their keys carry their seed, so `--seeds 5` after `--seeds 3`
reuses seeds S..S+2 from the cache.

`combine` turns the K per-replicate sections of a poison into the report's section: the first
replicate's section (K = 1: today's report, unchanged) with each judged accuracy replaced by the mean
over replicates and a 95 % interval beside it, the per-seed values under `replicates`, and the
certificate made into one claim about all K surrogates at once (see `combine_certificate`).
"""
from __future__ import annotations

import dataclasses

from certify.intervals import CONFIDENCE, method, summarize
from certify.curves import early_stop

ACCURACIES = (("clean_accuracy", "clean_interval"), ("protected_accuracy", "protected_interval"),
              ("peak_protected_accuracy", "peak_protected_interval"))


def seeds_of(cfg) -> list[int]:
    return [cfg.seed + i for i in range(cfg.seeds)]


def contexts(ctx) -> list:
    """One RunContext per replicate, sharing the run's graph, cache and data."""
    return [dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, seed=s), replicate=i)
            for i, s in enumerate(seeds_of(ctx.cfg))]


def replicate_alpha(alpha: float, k: int) -> float:
    """Each replicate's certificate level: by the union bound all K hold at once with probability ≥ 1 − α."""
    return alpha / k


def certifying(rep, k: int):
    """Replicate context `rep` with its certificate level α/K (what its report sections are made at)."""
    return dataclasses.replace(rep, cfg=dataclasses.replace(rep.cfg, alpha=replicate_alpha(rep.cfg.alpha, k)))


def _eta_key(r: float) -> str:
    return format(r, "g")


def _accuracies(emp: dict) -> dict:
    """One victim's judged accuracies at one seed (the crafting model's `empirical`, or a panel entry)."""
    defenses = emp.get("defenses") or {}
    return {**{f: emp[f] for f, _ in ACCURACIES},
            "defenses": {d: v["accuracy"] for d, v in defenses.items()},
            "defenses_peak": {d: v["peak_accuracy"] for d, v in defenses.items()}}


def record(seed: int, section: dict) -> dict:
    """The per-seed entry of `replicates`: what the run measured at this seed."""
    out = {"seed": seed, **_accuracies(section["empirical"])}
    if "victims" in section:
        out["victims"] = {a: _accuracies(v) for a, v in section["victims"].items()}
    if "certificate" in section:
        out["certified"] = {_eta_key(p["eta_over_sigma"]): p["learnability"] for p in section["certificate"]["curve"]}
        out["sigma"] = section["certificate"]["sigma"]  # the σ rule is seeded too
    if "recovery" in section:
        # the test accuracy at the point the attacker early-stops on (its own split), never a test-set pick
        out["recovery"] = {m: early_stop(r["curve"])["accuracy"] for m, r in section["recovery"].items() if r["curve"]}
    return out


def combine_certificate(certificates: list[dict], alpha: float) -> dict:
    """One certificate for K replicates, each computed at level α/K: at each η/σ the largest of their
    upper bounds and the smallest of their lower bounds (an abstention anywhere abstains), so with
    probability ≥ 1 − α the value bounds the learnability around every replicate's surrogate. Points
    are matched by η/σ: where the σ rule picked different σ for different seeds, each bound holds within
    η = (η/σ)·σ of its own surrogate (each seed's σ is in its `replicates` entry); the curve's η is the
    first seed's."""
    first = certificates[0]
    curve = []
    for i, pt in enumerate(first["curve"]):
        ups = [c["curve"][i]["learnability"] for c in certificates]
        lows = [c["curve"][i]["lower"] for c in certificates]
        curve.append({**pt, "learnability": None if None in ups else max(ups),
                      "lower": None if None in lows else min(lows)})
    etas = [c["max_certified_eta"] for c in certificates]
    return {**first, "curve": curve, "max_certified_eta": None if None in etas else min(etas), "alpha": alpha,
            "replicate_alpha": replicate_alpha(alpha, len(certificates)), "replicates": len(certificates)}


def _summary(values: list[float], n_test: int, mean: str, interval: str) -> dict:
    s = summarize(values, n_test)
    return {mean: s["mean"], interval: s["interval"]}


def _combined(first: dict, records: list[dict], n_test: int) -> dict:
    """One victim's section over the replicates: `first` (the first seed's) with each judged accuracy
    the mean over `records` (that victim's per-seed entries) and its interval beside it."""
    emp = dict(first)
    for field, interval in ACCURACIES:
        emp.update(_summary([r[field] for r in records], n_test, field, interval))
    if emp.get("defenses"):
        emp["defenses"] = {d: {**_summary([r["defenses"][d] for r in records], n_test, "accuracy", "interval"),
                               **_summary([r["defenses_peak"][d] for r in records], n_test, "peak_accuracy",
                                          "peak_interval")}
                           for d in emp["defenses"]}
    return emp


def combine(sections: list[dict], seeds: list[int], n_test: int, alpha: float) -> dict:
    """The report section of one poison from its K replicates' sections (in seed order)."""
    records = [record(s, sec) for s, sec in zip(seeds, sections)]
    first = sections[0]
    emp = _combined(first["empirical"], records, n_test)
    emp.update(interval_method=method(len(records)), seeds=len(records),
               confidence=CONFIDENCE)
    out = {**first, "empirical": emp, "replicates": records}
    if "victims" in first:
        out["victims"] = {a: _combined(v, [r["victims"][a] for r in records], n_test)
                          for a, v in first["victims"].items()}
    if "recovery" in first:
        out["recovery"] = {m: ({**r, **_summary([rec["recovery"][m] for rec in records], n_test, "best_accuracy",
                                                "best_interval")} if r["curve"] else r)
                           for m, r in first["recovery"].items()}
    if "certificate" in first:
        out["certificate"] = combine_certificate([sec["certificate"] for sec in sections], alpha)
    return out
