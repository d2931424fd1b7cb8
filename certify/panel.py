"""The victim panel (`--victims`): an attacker picks their own architecture. The poison is crafted
once, with the crafting model (`--model`); every victim architecture then trains on the clean data
(its own clean model), on each release and under each defense of the run, each with its own recipe
(`RunConfig.victim_training`). The crafting model's models are the training slice's, shared, not
trained twice. Its section is `victims.ARCH` of each poison, only where the panel names more than the
crafting model (the default panel gives today's reports).
"""
from __future__ import annotations

from certify.context import RunContext, Slice
from certify.registry import CONTROL
from certify.victims import add_defended, add_victim, empirical_section


def _others(ctx: RunContext) -> list[str]:
    """The panel's architectures other than the crafting model (they need tasks of their own)."""
    return [a for a in ctx.cfg.panel() if a != ctx.model.arch]


def _reported(ctx: RunContext) -> bool:
    return ctx.cfg.panel() != [ctx.model.arch]


def run(ctx: RunContext, keys: dict) -> dict:
    """Each other architecture's clean model (the reference its protected accuracy is read against)."""
    return {"panel_clean": {a: add_victim(ctx, keys["clean_release"], CONTROL, arch=a) for a in _others(ctx)}}


def add(ctx: RunContext, keys: dict) -> dict:
    name, release = keys["name"], keys["release"]
    return {"panel": {a: {"victim": add_victim(ctx, release, name, arch=a),
                          "defended": {d: add_defended(ctx, release, name, d, arch=a) for d in ctx.cfg.defenses}}
                      for a in _others(ctx)}}


def _keys_of(keys: dict, arch: str, crafting: str) -> tuple[str, str, dict]:
    """(clean model, protected model, {defense: defended model}) keys of one victim architecture."""
    if arch == crafting:
        return keys["clean"], keys["victim"], keys["defended"]
    mine = keys["panel"][arch]
    return keys["panel_clean"][arch], mine["victim"], mine["defended"]


def victim_section(clean: dict, protected: dict, defended: dict[str, dict]) -> dict:
    """One victim's measured accuracies (the fields of `empirical` a panel reports)."""
    emp = empirical_section(clean, protected, defended)
    kept = ("clean_accuracy", "protected_accuracy", "peak_protected_accuracy", "clean_train_accuracy",
            "protected_train_accuracy")
    return {**{f: emp[f] for f in kept}, "defenses": emp.get("defenses") or {}}


def section(ctx: RunContext, keys: dict, values: dict) -> dict:
    if not _reported(ctx):
        return {}
    out = {}
    for a in ctx.cfg.panel():
        clean, protected, defended = _keys_of(keys, a, ctx.model.arch)
        out[a] = victim_section(values[clean], values[protected], {d: values[k] for d, k in defended.items()})
    return {"victims": out}


def summary(ctx: RunContext) -> dict | None:
    """The report's top-level `victims`: who crafted, who trained, and each one's recipe."""
    if not _reported(ctx):
        return None
    from dataclasses import asdict

    from certify.models import count_parameters

    archs = ctx.cfg.panel()
    trained = list(dict.fromkeys([ctx.model.arch, *archs]))  # the crafting model's models train too
    return {"crafting_model": ctx.model.arch, "architectures": archs,
            "parameters": {a: count_parameters(ctx.model.of(a).build(0)) for a in trained},
            "training": {a: asdict(ctx.cfg.victim_training(a)) for a in trained}}


SLICE = Slice("panel", add, section, run)
