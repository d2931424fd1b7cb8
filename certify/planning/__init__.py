"""`certify plan`: the smallest perturbation budget that protects.

A larger perturbation protects more and shows more. A plan crafts one poison at each budget (its
`epsilon` replaced), trains, defends and certifies each release, measures how visible it is, and
recommends the smallest budget meeting the owner's targets. It is one graph of the run's own
tasks: the clean release, clean model, sigma, independent model and the clean control's
certificate once; per budget a craft task, its victim, its defended victims, its certificate and
its perceptual distances. Keys differ per budget, so the cache keeps each (and a budget equal to
the run's shares the run's artifacts).

Modules: `budgets` (parsing, the poison's budget field), `targets` (the recommendation rule),
`perceptual` (PSNR, SSIM, norms), `render` (plan.md, plan.html, figures).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from attacks.base import POISONS, undershoot
from certify import certificate, panel, replicates, slices
from certify.cache import tensor_digest
from certify.files import atomic_write
from certify.config import RunConfig, to_dict
from certify.context import RunContext
from certify.crafting import poison_params
from certify.curves import reference_point
from certify.errors import UserError
from certify.intervals import summarize
from certify.models import count_parameters
from certify.pipeline import begin, run_tasks
from certify.planning.budgets import VARIABLE_NORMS, Budget, parse_budgets, with_budget
from certify.planning import perceptual
from certify.planning.targets import Targets, attacker_best, meets, recommend
from certify.progress import say
from certify.registry import CONTROL
from certify.report.assemble import environment, timings
from certify.report.schema import PLAN_SCHEMA_ID

SCHEMA = PLAN_SCHEMA_ID
# the slices of a plan: the run's, less scores and recovery, and the perceptual distances
SLICES = slices.only("crafting", "victims", "panel", "certificate") + (perceptual.SLICE,)

__all__ = ["PlanRequest", "load_request", "run_plan", "budget_row", "Targets", "SCHEMA"]


@dataclass(frozen=True)
class PlanRequest:
    poison: str
    budgets: list[Budget]
    targets: Targets


def load_request(cfg: RunConfig, poison: str, budgets: str, targets: Targets) -> PlanRequest:
    """The plan's own inputs, each checked before any work (one line naming what is wrong)."""
    if "," in poison:
        raise UserError("plan takes one --poison; run it once per poison (the second run takes the clean "
                        "model, sigma and the clean certificate from the cache)")
    params = POISONS.params_for(poison, cfg)
    norm = type(params).norm if params is not None else "none"
    if norm not in VARIABLE_NORMS:
        raise UserError(f"poison {poison} has no {' or '.join(VARIABLE_NORMS)} budget (its norm is {norm}); "
                        "plan varies those budgets only")
    targets.validate()
    parsed = parse_budgets(budgets, norm)
    for b in parsed:
        with_budget(params, b, f"poison {poison} at budget {b.label}")
    return PlanRequest(poison, parsed, targets)


def _add_tasks(ctx: RunContext, request: PlanRequest) -> dict:
    """Every task of the plan for one replicate context: the run-level tasks of its slices (clean
    release, clean model, σ, independent model), the clean control's certificate, then per budget
    its slices (a release at that budget, victims, certificate, perceptual distances)."""
    run = slices.add_run(ctx, SLICES)
    control = {**run, "name": CONTROL, "release": run["clean_release"], "victim": run["clean"]}
    params = poison_params(ctx, request.poison)
    budgets = []
    for b in request.budgets:
        label = f"{request.poison}@{b.label}"
        budgets.append(slices.add_poison(ctx, SLICES, run, {"name": label, "poison": request.poison,
                                                            "params": with_budget(params, b, label)}))
    return {"run": run, "control": {**control, **certificate.SLICE.add(ctx, control)}, "budgets": budgets}


def budget_row(budget: Budget, applied_epsilon: float, protected: dict, defended: dict[str, dict], cert: dict,
               clean_certified: float | None, perceptual: dict, victims: dict[str, dict] | None = None) -> dict:
    """One budget's line of plan.json. `protected` and each of `defended` are {"mean", "interval",
    "method"} over the plan's seeds (certify.intervals.summarize). The certified values are read at
    the point of the curve a run's summary quotes; the gap is the clean control's certified
    learnability minus this one's (positive: the poison lowers what can be certifiably learned).
    `victims`: each other architecture of the panel, {"protected": summary, "defended": {d: summary}}."""
    point = reference_point(cert["curve"])
    certified = point["learnability"]
    best = max(defended, key=lambda d: defended[d]["mean"]) if defended else None
    row = {"budget": budget.label, "norm": budget.norm, "epsilon": budget.epsilon,
           "applied_epsilon": applied_epsilon,
           "measured": {k: perceptual[k] for k in ("linf_max", "linf_mean", "l2_max", "l2_mean")},
           "protected_accuracy": protected["mean"], "protected_interval": protected["interval"],
           "defended_accuracy": defended[best]["mean"] if best else None, "best_defense": best,
           "defenses": {d: s["mean"] for d, s in defended.items()},
           "defense_intervals": {d: s["interval"] for d, s in defended.items()},
           "certified": certified,
           "certified_drop": None if certified is None or clean_certified is None else clean_certified - certified,
           "certified_curve": [{"eta_over_sigma": p["eta_over_sigma"], "learnability": p["learnability"]}
                               for p in cert["curve"]],
           "max_certified_eta": cert["max_certified_eta"], "surrogate_accuracy": cert["surrogate_accuracy"],
           "psnr": perceptual["psnr"], "ssim": perceptual["ssim"]}
    if victims:
        row["victims"] = {a: {"protected_accuracy": v["protected"]["mean"], "protected_interval": v["protected"]["interval"],
                              "defenses": {d: s["mean"] for d, s in v["defended"].items()},
                              "defense_intervals": {d: s["interval"] for d, s in v["defended"].items()}}
                          for a, v in victims.items()}
    return {**row, "attacker_best": attacker_best(row)}


def _assemble(ctx: RunContext, request: PlanRequest, keys: list[dict], outcome, command: str, t0: float) -> dict:
    """plan.json from the artifacts of every replicate (`keys`: one `_add_tasks` result per seed):
    accuracies are means over the seeds with their intervals, certificates one claim over all seeds
    (each at α/K, the largest bound: certify.replicates)."""
    cfg, v = ctx.cfg, outcome.values
    reps = replicates.contexts(ctx)
    n_test = len(ctx.data.y_test)
    level = replicates.replicate_alpha(cfg.alpha, len(reps))
    at_level = [replicates.certifying(r, len(reps)) for r in reps]  # each replicate's certificate at α/K

    # per replicate (seed order): the control's certificate section and each budget's slice sections
    control = [certificate.SLICE.section(r, k["control"], v) for r, k in zip(at_level, keys)]
    budgets = [[slices.sections(r, SLICES, p, v) for p in k["budgets"]] for r, k in zip(at_level, keys)]

    def accuracy(values: list[float]) -> dict:  # one accuracy per replicate -> mean and interval
        return summarize(values, n_test)

    clean_cert = replicates.combine_certificate([c["certificate"] for c in control], cfg.alpha)
    clean_point = reference_point(clean_cert["curve"])
    params = poison_params(ctx, request.poison)
    rows = []
    for j, b in enumerate(request.budgets):
        applied = float(with_budget(params, b, b.label).epsilon_for(ctx.data.shape))
        secs = [rep[j] for rep in budgets]
        protected = accuracy([s["empirical"]["protected_accuracy"] for s in secs])
        defended = {d: accuracy([s["empirical"]["defenses"][d]["accuracy"] for s in secs])
                    for d in secs[0]["empirical"].get("defenses", {})}
        others = [a for a in secs[0].get("victims", {}) if a != ctx.model.arch]
        victims = {a: {"protected": accuracy([s["victims"][a]["protected_accuracy"] for s in secs]),
                       "defended": {d: accuracy([s["victims"][a]["defenses"][d]["accuracy"] for s in secs])
                                    for d in secs[0]["victims"][a]["defenses"]}} for a in others}
        cert = replicates.combine_certificate([s["certificate"] for s in secs], cfg.alpha)
        row = budget_row(b, applied, protected, defended, cert, clean_point["learnability"], secs[0]["perceptual"],
                         victims)
        row["meets_targets"] = meets(row, request.targets) if request.targets.given else None
        rows.append(row)
    warnings = [f"budget {r['budget']}: the release equals the clean images (no perturbation survives 8-bit "
                "storage at this budget)" for r in rows if r["measured"]["linf_max"] == 0]
    warnings += _reached(rows, [tensor_digest(v[b["release"]]["released"]) for b in keys[0]["budgets"]],
                         request.poison)
    clean = accuracy([v[k["run"]["clean"]]["history"]["final_test_accuracy"] for k in keys])
    return {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command, "poison": request.poison, "norm": request.budgets[0].norm, "seed": cfg.seed,
            "seeds": replicates.seeds_of(cfg), "interval_method": clean["method"],
            "config": to_dict(cfg), "environment": environment(cfg, ctx.device), "dataset": ctx.data.info(),
            "model": {"arch": ctx.model.arch, "parameters": count_parameters(ctx.model.build(0))},
            **({"victims": panel.summary(ctx)} if panel.summary(ctx) else {}),
            "targets": dataclasses.asdict(request.targets), "defenses": list(cfg.defenses),
            "certificate": {"eta_over_sigma": clean_point["eta_over_sigma"], "eta": clean_point["eta"],
                            "sigma": clean_cert["sigma"], "q": cfg.q, "alpha": cfg.alpha, "samples": cfg.samples,
                            "coverage": cfg.coverage, "replicate_alpha": level},
            "clean": {"accuracy": clean["mean"], "interval": clean["interval"], "certified": clean_point["learnability"],
                      "surrogate_accuracy": clean_cert["surrogate_accuracy"],
                      "independent_distance": clean_cert["independent_distance"]},
            "budgets": rows, "recommended": recommend(rows, request.targets), "warnings": warnings,
            "timings": timings(outcome.records, time.time() - t0),
            "execution": {"executor": cfg.executor, "cached": outcome.cached, "tasks": outcome.records}}


def _reached(rows: list[dict], digests: list[str], poison: str) -> list[str]:
    """Mark each row whose release (the first seed's) is byte for byte a smaller budget's
    (`same_release_as`), and warn where the crafting stayed under half of a budget: a plan's rows
    must not read as different budgets when the crafting made the same release."""
    warnings, first = [], {}
    for row, digest in sorted(zip(rows, digests), key=lambda rd: rd[0]["epsilon"]):
        row["same_release_as"] = first.get(digest)
        first.setdefault(digest, row["budget"])
        measured = row["measured"]["linf_max" if row["norm"] == "linf" else "l2_max"]
        short = undershoot(f"{poison} at budget {row['budget']}", row["norm"], row["epsilon"], measured)
        if short:
            warnings.append(short)
        if row["same_release_as"]:
            warnings.append(f"budget {row['budget']}: the release is the same as at budget {row['same_release_as']}: "
                            "the crafting does not use the larger budget, so the row repeats that one")
    return warnings


def _line(row: dict) -> str:
    cert = "abstains" if row["certified"] is None else f"{row['certified']:.3f}"
    gap = "-" if row["certified_drop"] is None else f"{row['certified_drop']:+.3f}"
    defended = "-" if row["defended_accuracy"] is None else f"{row['defended_accuracy']:.3f} ({row['best_defense']})"
    psnr = "-" if row["psnr"] is None else f"{row['psnr']:.1f} dB"
    same = f" (the release of {row['same_release_as']})" if row.get("same_release_as") else ""
    return (f"budget {row['budget']}{same}: protected {row['protected_accuracy']:.3f}, defended {defended}, certified "
            f"{cert} (gap {gap}), PSNR {psnr}, SSIM {row['ssim']:.3f}")


def run_plan(cfg: RunConfig, request: PlanRequest, command: str) -> tuple[dict, Path]:
    """Run the plan's graph and write plan.json, plan.md, plan.html and figures/ to --out."""
    from certify.planning.render import write_plan

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg = dataclasses.replace(cfg, poisons=[request.poison], skip=["scores", "recovery"],  # SAL keeps no epochs
                              out=cfg.out or f"reports/plans/{stamp}-{request.poison}")
    labels = ", ".join(b.label for b in request.budgets)
    out, ctx, t0 = begin(cfg, command, f"plan for {request.poison} at {request.budgets[0].norm} budgets {labels}")
    keys = [_add_tasks(rep, request) for rep in replicates.contexts(ctx)]
    doc = _assemble(ctx, request, keys, run_tasks(ctx, t0), command, t0)
    for row in doc["budgets"]:
        say(_line(row))
    for w in doc["warnings"]:
        print(f"certify: warning: {w}", file=sys.stderr, flush=True)
    atomic_write(out / "plan.json", lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n"))
    write_plan(doc, out)
    return doc, out
