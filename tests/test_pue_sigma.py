"""PUE is crafted at the run's σ: the craft task takes the σ artifact as an input (a constant for
`--sigma F`, the auto rule's task on the clean model otherwise), records the σ it used, and an
explicit `sigma_max` wins over the run's."""
from __future__ import annotations

import time

import pytest
import torch

from certify.cache import Cache
from certify.certificate import add_sigma, sigma_of
from certify.config import load_config
from certify.context import ModelSpec, RunContext
from certify.crafting import add_release, budget_head
from certify.victims import add_victim
from certify.graph import run_graph
from certify.progress import set_quiet


@pytest.fixture(autouse=True)
def quiet():
    set_quiet(True)
    yield
    set_quiet(False)


def _context(digits, cache_dir, **flags) -> RunContext:
    cfg = load_config(None, {"dataset": "digits", "poisons": ["pue"], "executor": "serial", **flags})
    ctx = RunContext(cfg, digits, Cache(cache_dir), ModelSpec("cnn", digits.shape, digits.num_classes), "cpu",
                     "data-digits", "t")
    ctx.graph.const(ctx.data_key, digits)
    return ctx


def _craft(digits, cache_dir, **flags):
    ctx = _context(digits, cache_dir, **flags)
    auto = ctx.cfg.sigma == "auto" and "sigma_max" not in ctx.cfg.poison_params.get("pue", {})
    clean = add_victim(ctx, add_release(ctx, "none"), "none") if auto else None  # the auto rule's input
    key = add_release(ctx, "pue", sigma=add_sigma(ctx, clean))
    outcome = run_graph(ctx.graph, ctx.cache, executor="serial", t0=time.time())
    return ctx, key, outcome


def test_pue_is_crafted_at_the_fixed_sigma_and_records_it(digits, tmp_path):
    ctx5, key5, out5 = _craft(digits, tmp_path, sigma=0.05)
    ctx1, key1, out1 = _craft(digits, tmp_path, sigma=0.1)
    assert ctx5.graph.tasks[key5].inputs == (ctx5.data_key, "sigma-fixed-0.05")
    assert [r["stage"] for r in out5.records] == ["craft"]  # a fixed σ needs no clean model
    a5, a1 = out5.values[key5], out1.values[key1]
    assert a5["sigma"] == 0.05 and a1["sigma"] == 0.1
    assert not torch.equal(a5["released"], a1["released"])
    assert budget_head(ctx5, "pue", a5)["parameters"]["sigma_max"] == 0.05
    assert budget_head(ctx1, "pue", a1)["parameters"]["sigma_max"] == 0.1

    # an explicit sigma_max wins: no σ input, and the release the run's σ = 0.05 gave
    ctx, key, out = _craft(digits, tmp_path, sigma=0.1, poison_params={"pue": {"sigma_max": 0.05}})
    assert ctx.graph.tasks[key].inputs == (ctx.data_key,) and "sigma" not in out.values[key]
    assert torch.equal(out.values[key]["released"], a5["released"])
    assert budget_head(ctx, "pue", out.values[key])["parameters"]["sigma_max"] == 0.05


def test_auto_sigma_is_chosen_on_the_clean_model_before_pue_is_crafted(digits, tmp_path):
    ctx, key, out = _craft(digits, tmp_path, train={"epochs": 2}, smoothing={"sigma_draws": 5})
    stages = [(r["stage"], r["poison"]) for r in out.records]
    assert stages == [("craft", "none"), ("train", "none"), ("sigma", None), ("craft", "pue")]
    sigma_key = ctx.graph.tasks[key].inputs[1]
    assert ctx.graph.tasks[sigma_key].stage == "sigma"
    chosen, _ = sigma_of(out.values[sigma_key])
    assert out.values[key]["sigma"] == chosen
    assert budget_head(ctx, "pue", out.values[key])["parameters"]["sigma_max"] == chosen
