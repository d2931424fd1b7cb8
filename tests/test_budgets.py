"""Every registered poison keeps its declared budget on what it releases (small digits subset, fast settings).

New poison files are picked up automatically (`POISONS.names()`); their schedules are cut to one
round/step/epoch by name (`fast_overrides`), so this stays a quick CPU test.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import certify.models
import certify.training
from attacks.base import POISONS, CraftContext, measure
from certify.data import load_dataset
from certify.errors import UserError

PER_CLASS = 20  # 10 classes x 20 = 200 digits
# int fields whose name says "how many iterations" are set to 1 (e.g. rounds, steps, epochs,
# model_steps, pgd_steps, iterations, max_rounds, model_batches, eot_samples, draws)
FAST_FIELD = re.compile(r"(^|_)(rounds?|steps?|epochs?|iterations?|iters?|batches|draws|restarts|eot|eot_samples|repeats)($|_)")
NOT_A_COUNT = re.compile(r"(size|width|seed|every|start|warmup_fraction)")


def fast_overrides(params_cls) -> dict:
    out = {}
    for f in dataclasses.fields(params_cls):
        default = f.default
        if not isinstance(default, int) or isinstance(default, bool) or default <= 1:
            continue
        if FAST_FIELD.search(f.name) and not NOT_A_COUNT.search(f.name):
            out[f.name] = 1
    return out


def build_params(name: str):
    """The poison's parameters with the fast overrides; an override its validation rejects is dropped."""
    entry = POISONS.get(name)
    if entry.params is None:
        return None, {}
    overrides = fast_overrides(entry.params)
    for _ in range(len(overrides) + 1):
        try:
            return POISONS.params(name, overrides), overrides
        except UserError as e:
            bad = [k for k in overrides if k in str(e)]
            if not bad:
                raise
            overrides.pop(bad[0])
    return POISONS.params(name, overrides), overrides


@pytest.fixture(scope="module")
def digits_subset():
    d = load_dataset("digits")
    idx = torch.cat([(d.y_train == k).nonzero().flatten()[:PER_CLASS] for k in range(d.num_classes)])
    idx = idx.sort().values
    return d.x_train[idx].contiguous(), d.y_train[idx].contiguous(), d.num_classes


def test_fast_overrides_are_generic():
    @dataclasses.dataclass
    class P:
        rounds: int = 100
        steps: int = 10
        pgd_steps: int = 20
        model_steps: int = 10
        epochs: int = 5
        iterations: int = 250
        batch_size: int = 512
        step: float = 0.8 / 255
        width: int = 8
        zeta: float = 0.0
        flip: bool = True

    assert fast_overrides(P) == {"rounds": 1, "steps": 1, "pgd_steps": 1, "model_steps": 1, "epochs": 1,
                                 "iterations": 1}


def test_every_poison_is_covered():
    names = POISONS.names()
    assert {"none", "random", "random-classwise", "lsp", "ops", "ar"} <= set(names)


@pytest.mark.parametrize("name", POISONS.names())
def test_released_data_keeps_the_budget(name, digits_subset):
    x, y, k = digits_subset
    shape = tuple(x.shape[1:])
    p, _ = build_params(name)
    ctx = CraftContext(
        x=x.clone(), y=y.clone(), num_classes=k,
        make_model=lambda s: certify.models.build_model("cnn", shape, k, s),
        train=certify.training.TrainConfig(epochs=1),
        seed=1234, device=torch.device("cpu"),
    )
    released = POISONS.get(name).factory(ctx, p)
    assert torch.equal(ctx.x, x) and torch.equal(ctx.y, y), "crafting must not modify the clean data"
    assert isinstance(released, torch.Tensor) and released.shape == x.shape
    assert released.dtype == torch.float32
    released = released.detach().cpu()
    assert bool(torch.isfinite(released).all())
    assert float(released.min()) >= 0.0 and float(released.max()) <= 1.0
    steps = released * 255
    assert float((steps - torch.round(steps)).abs().max()) < 1e-3, "released values must lie on the 1/255 grid"
    if p is None or p.norm == "none":
        return
    # l2 poisons that scale their budget with the image size say so with epsilon_for(shape)
    eps = p.epsilon_for(shape) if hasattr(p, "epsilon_for") else p.epsilon
    measured = measure(x, released, p.norm)
    assert measured <= eps + 1e-6, f"{name}: measured {p.norm} {measured:.6f} > budget {eps:.6f}"


def test_off_grid_linf_budget_is_kept_after_8_bit_rounding():
    """A delta at an off-grid budget (1.5/255) rounds to 2/255 on storage; the release keeps the
    largest grid step within the budget instead (was: crafting ended in 'exceeds its budget')."""
    from attacks.base import measure, release

    x = torch.full((4, 3, 8, 8), 0.5).mul(255).round().div(255)
    delta = torch.full_like(x, 1.5 / 255) * torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, 1, 1)
    out = release(x, delta, "linf", 1.5 / 255)
    assert measure(x, out, "linf") <= 1.5 / 255
    assert abs(measure(x, out, "linf") - 1 / 255) < 1e-6


def test_a_release_well_under_its_budget_is_flagged_in_its_units():
    from attacks.base import undershoot

    assert undershoot("miue", "linf", 8 / 255, 4 / 255) is None  # exactly half is reached
    short = undershoot("miue", "linf", 8 / 255, 3.9 / 255)
    assert short.startswith("miue: the measured linf perturbation 3.9/255 is under half of the budget 8/255")
    assert undershoot("lsp", "l2", 1.0, 0.4).startswith("lsp: the measured l2 perturbation 0.4 is under half")
    assert undershoot("ops", "l0", 1, 0) is None and undershoot("none", "none", 0.0, 0.0) is None


def test_plan_rows_of_one_release_are_marked_and_short_budgets_warned():
    from certify.planning import _reached

    def row(label, eps, measured):
        return {"budget": label, "norm": "linf", "epsilon": eps, "measured": {"linf_max": measured}}

    rows = [row("16/255", 16 / 255, 4 / 255), row("2/255", 2 / 255, 2 / 255), row("4/255", 4 / 255, 4 / 255),
            row("8/255", 8 / 255, 4 / 255)]
    warnings = _reached(rows, ["d4", "d2", "d4", "d4"], "miue")
    assert [r["same_release_as"] for r in rows] == ["4/255", None, None, "4/255"]
    assert any(w.startswith("miue at budget 16/255: the measured linf perturbation 4/255 is under half") for w in warnings)
    assert not any(w.startswith("miue at budget 8/255: the measured") for w in warnings)  # 4/255 is half of 8/255
    assert "budget 8/255: the release is the same as at budget 4/255" in " ".join(warnings)


def test_certify_poison_warns_when_the_crafting_stops_short(tmp_path, capsys):
    """MI-UE's digits schedule reaches 4/255 of its 8/255 budget at most; a budget of 16/255 it cannot
    reach is warned about on stderr, not only printed as two numbers."""
    from certify.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("poison_params: {miue: {epsilon: 0.0627451}}\n")
    assert main(["poison", "--poison", "miue", "--dataset", "digits", "--config", str(cfg), "--format", "npz",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "certify: warning: miue: the measured linf perturbation" in err and "under half of the budget 16/255" in err
