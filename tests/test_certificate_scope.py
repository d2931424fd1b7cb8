"""The certificate's scope: K victims trained independently on each release, their l2 distances to
the surrogate and how many lie within the certified eta (`certificate.independent_models`), the config field
that sets K, and end to end on digits (recorded, first seed only, the independent model reused, K = 0
omits the field)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from certify import replicates
from certify.cache import Cache
from certify.certificate.scope import victims_field
from certify.cli import main
from certify.config import load_config
from certify.context import ModelSpec, RunContext
from certify.errors import UserError
from certify.models import trainable
from certify.pipeline import add_tasks
from certify.report.schema import validate_report

TINY = "train: {epochs: 2}\nsurrogate: {epochs: 1}\nsmoothing: {chunk: 10, sigma_draws: 5}\n"


@pytest.mark.parametrize("value", [-1, 2.5, True, "5", 21])
def test_victims_must_be_a_small_non_negative_integer(value):
    with pytest.raises(UserError, match="independent_models"):
        load_config(None, {"dataset": "digits", "independent_models": value})


def test_victims_default_to_five_and_zero_is_allowed():
    assert load_config(None, {"dataset": "digits"}).independent_models == 5
    assert load_config(None, {"dataset": "digits", "independent_models": 0}).independent_models == 0


def _moved(spec: ModelSpec, state: dict, d: float) -> dict:
    """`state` with its first trainable parameter moved by l2 distance `d` (buffers untouched)."""
    name = next(iter(trainable(spec.load(state))))
    out = {k: v.clone() for k, v in state.items()}
    direction = torch.randn(out[name].shape, generator=torch.Generator().manual_seed(1))
    out[name] += d * direction / direction.norm()
    return out


def test_within_counts_the_victims_at_most_eta_from_the_surrogate():
    spec = ModelSpec("cnn", (1, 8, 8), 10)
    ctx = SimpleNamespace(model=spec)
    sur = {"state": spec.build(0).state_dict()}
    victims = [{"state": _moved(spec, sur["state"], d)} for d in (0.5, 1.0, 2.0)]
    v = victims_field(ctx, sur, victims, 1.0)
    assert v["k"] == 3 and v["distances"] == pytest.approx([0.5, 1.0, 2.0], rel=1e-5)
    assert v["within"] == 2 and v["max_certified_eta"] == 1.0  # d <= eta: the one at 1.0 counts
    assert victims_field(ctx, sur, victims, 0.1)["within"] == 0
    assert victims_field(ctx, sur, victims, None)["within"] == 0  # no eta certified: none covered


def _plans(digits, tmp_path, **overrides) -> list[dict]:
    """The keys of every replicate of a digits run of `random` (nothing runs)."""
    cfg = load_config(None, {"dataset": "digits", "executor": "serial", "samples": 20, **overrides})
    ctx = RunContext(cfg, digits, Cache(tmp_path / "cache"), ModelSpec("cnn", digits.shape, digits.num_classes),
                     "cpu", "data-digits", "test-digits")
    ctx.graph.const(ctx.data_key, digits)
    return [add_tasks(rep, {}, [{"name": "none"}, {"name": "random"}]) for rep in replicates.contexts(ctx)]


def test_the_controls_first_victim_is_the_independent_model_and_later_seeds_train_none(digits, tmp_path):
    first, second = _plans(digits, tmp_path, independent_models=3, seeds=2)
    none, random = first["poisons"]["none"]["scope_victims"], first["poisons"]["random"]["scope_victims"]
    assert none[0] == first["run"]["independent"]  # one task, one cached artifact
    assert len(set(none)) == len(set(random)) == 3 and not set(none) & set(random)  # own seeds, own releases
    assert all("scope_victims" not in p for p in second["poisons"].values())
    assert all("scope_victims" not in p for p in _plans(digits, tmp_path, independent_models=0)[0]["poisons"].values())
    assert all("scope_victims" not in p for p in _plans(digits, tmp_path, skip=["certify"])[0]["poisons"].values())


def _run(tmp_path, capsys, name: str, victims: int, *extra: str) -> dict:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(TINY + f"independent_models: {victims}\n")
    code = main(["--quiet", "run", "--poison", "random", "--dataset", "digits", "--config", str(cfg), "--samples", "20",
                 "--skip", "scores,recovery", "--executor", "serial", "--out", str(tmp_path / name),
                 "--cache-dir", str(tmp_path / "cache"), *extra])
    assert code == 0, capsys.readouterr().err
    return json.loads((tmp_path / name / "report.json").read_text())


@pytest.mark.slow
def test_victims_are_recorded_for_the_first_seed_and_zero_omits_them(tmp_path, capsys):
    two = _run(tmp_path, capsys, "two", 2, "--seeds", "2", "--sigma", "0.02")
    validate_report(two)
    tasks = [(t["stage"], t["poison"]) for t in two["execution"]["tasks"]]
    # first seed: the control's first victim is the independent model (one task), one more each for
    # the control and 2 for `random`; the second seed: only its own independent model
    assert tasks.count(("independent", "none")) == 3 and tasks.count(("independent", "random")) == 2
    for name in ("none", "random"):
        cert = two["poisons"][name]["certificate"]
        v = cert["independent_models"]
        assert v["k"] == 2 and len(v["distances"]) == 2 and all(d > 0 for d in v["distances"])
        eta = v["max_certified_eta"]
        assert v["within"] == sum(d <= eta for d in v["distances"]) if eta is not None else v["within"] == 0
    control = two["poisons"]["none"]["certificate"]
    assert control["independent_distance"] != control["independent_models"]["distances"][0]  # to the clean model vs the surrogate
    text = (tmp_path / "two" / "report.md").read_text()
    assert f"covers {control['independent_models']['within']} of 2 victims trained independently on the clean data" in text
    assert "measured for the first seed's surrogate only" in text

    off = _run(tmp_path, capsys, "off", 0, "--seeds", "2", "--sigma", "0.02")
    validate_report(off)
    assert off["execution"]["tasks"] == []  # every task of K = 0 is one of K = 2's, from the cache
    assert all("independent_models" not in s["certificate"] for s in off["poisons"].values())
    assert "victims trained independently" not in (tmp_path / "off" / "report.md").read_text()
    assert off["poisons"]["none"]["certificate"]["independent_distance"] == control["independent_distance"]
