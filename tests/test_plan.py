"""`certify plan`: budgets parsed and checked, the recommendation rule on made-up rows, bad input as
one line, and one plan on digits whose numbers hang together (and share the run's artifacts)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from certify.cli import main
from certify.errors import UserError
from certify.planning.budgets import parse_budgets
from certify.planning.perceptual import distances
from certify.planning.targets import Targets, attacker_best, recommend

FAST = "train:\n  epochs: 3\nsurrogate:\n  epochs: 2\nsmoothing:\n  chunk: 10\n  sigma_draws: 10\n"


# ---------------------------------------------------------------------------- budgets
def test_budgets_are_sorted_deduplicated_and_exact():
    got = parse_budgets("8/255, 2/255,0.03137254901960784,linf:4/255", "linf")
    assert [b.label for b in got] == ["2/255", "4/255", "8/255"]
    assert [b.epsilon for b in got] == [2 / 255, 4 / 255, 8 / 255]  # exactly k/255: the run's own keys
    l2 = parse_budgets("1,0.5,l2:0.5", "l2")
    assert [(b.label, b.norm, b.epsilon) for b in l2] == [("0.5", "l2", 0.5), ("1", "l2", 1.0)]


@pytest.mark.parametrize("text, norm, message", [
    ("0", "linf", "'0' is not a budget"),
    ("-2/255", "linf", "'-2/255' is not a budget"),
    ("eight", "linf", "'eight' is not a budget"),
    (" , ", "linf", "expected a comma-separated list"),
    ("0.01", "linf", "whole number of 8-bit steps"),
    ("256/255", "linf", "whole number of 8-bit steps"),
    ("l2:0.5", "linf", "is an l2 budget, but the poison's budget is linf"),
    ("linf:8/255", "l2", "is an linf budget, but the poison's budget is l2"),
])
def test_bad_budgets_are_refused(text, norm, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_budgets(text, norm)


# ---------------------------------------------------------------------------- recommendation
ROWS = [  # deliberately unsorted; 8/255's certificate abstains (no gap)
    {"budget": "16/255", "epsilon": 16 / 255, "protected_accuracy": 0.10, "certified_drop": 0.20},
    {"budget": "2/255", "epsilon": 2 / 255, "protected_accuracy": 0.60, "certified_drop": 0.01},
    {"budget": "8/255", "epsilon": 8 / 255, "protected_accuracy": 0.20, "certified_drop": None},
    {"budget": "4/255", "epsilon": 4 / 255, "protected_accuracy": 0.40, "certified_drop": 0.05},
]


@pytest.mark.parametrize("accuracy, gap, expected", [
    (0.5, None, "4/255"),      # the smallest meeting it, not the first listed
    (0.4, None, "4/255"),      # at the boundary: at most F
    (0.39, None, "8/255"),
    (1.0, None, "2/255"),
    (None, 0.05, "4/255"),     # at the boundary: at least F
    (None, 0.06, "16/255"),    # 8/255 abstains: it certifies no gap
    (0.3, 0.1, "16/255"),      # both targets
    (0.05, None, None),        # none meets
    (1.0, 0.5, None),
    (None, None, None),        # no targets: no recommendation
])
def test_recommend_is_the_smallest_budget_meeting_every_target(accuracy, gap, expected):
    assert recommend(ROWS, Targets(accuracy, gap)) == expected


def test_the_accuracy_target_reads_the_attackers_best_over_the_defenses_by_default():
    """MI-UE and EM at 8/255: undefended below 0.25, but JPEG restores them above 0.36 at every budget."""
    rows = [{"budget": b, "epsilon": e / 255, "protected_accuracy": p, "protected_interval": [p - 0.02, p + 0.02],
             "defenses": {"jpeg": j, "grayscale": 0.2}, "defense_intervals": {"jpeg": [j - 0.02, j + 0.03]},
             "certified_drop": 0.2} for b, e, p, j in (("4/255", 4, 0.30, 0.40), ("8/255", 8, 0.20, 0.37))]
    assert attacker_best(rows[1]) == {"accuracy": pytest.approx(0.40), "by": "jpeg"}  # the upper end
    assert attacker_best({**rows[1], "defenses": {}}) == {"accuracy": pytest.approx(0.22), "by": "undefended"}
    assert recommend(rows, Targets(0.25, 0.1)) is None
    assert recommend(rows, Targets(0.25, 0.1, "undefended")) == "8/255"
    assert recommend(rows, Targets(0.4, None)) == "8/255"  # 0.40 at most 0.4; 4/255 reaches 0.43
    with pytest.raises(UserError, match="targets reading must be one of best-defended, undefended"):
        Targets(0.25, None, "peak").validate()


@pytest.mark.parametrize("targets, flag", [(Targets(2.0, None), "--target-accuracy"),
                                           (Targets(None, -0.1), "--target-drop"),
                                           (Targets(math.nan, None), "--target-accuracy")])
def test_targets_outside_the_unit_interval_are_refused(targets, flag):
    with pytest.raises(UserError, match=f"{flag} must be in \\[0, 1\\]"):
        targets.validate()


# ---------------------------------------------------------------------------- perceptual distances
def test_distances_match_known_values():
    x = torch.full((2, 3, 8, 8), 0.5)
    r = x.clone()
    r[0] += 4 / 255  # every pixel of one image moved by 4/255
    d = distances(x, r)
    assert d["linf_max"] == pytest.approx(4 / 255) and d["linf_mean"] == pytest.approx(2 / 255)
    assert d["l2_max"] == pytest.approx(4 / 255 * math.sqrt(192), rel=1e-5)
    mse = (4 / 255) ** 2 / 2  # half the pixels moved
    assert d["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert 0 < d["ssim"] < 1
    same = distances(x, x.clone())
    assert same["linf_max"] == 0 and same["ssim"] == pytest.approx(1.0)
    assert same["psnr"] is None  # infinite: no perturbation at all


# ---------------------------------------------------------------------------- the CLI
def _plan(tmp_path, *args):
    (tmp_path / "fast.yaml").write_text(FAST)
    return ["plan", "--dataset", "digits", "--samples", "40", "--q", "0.5", "--executor", "serial", "--threads", "1",
            "--config", str(tmp_path / "fast.yaml"), "--cache-dir", str(tmp_path / "cache"), *args]


@pytest.mark.parametrize("args, message", [
    (["--poison", "random", "--budgets", "0"], "--budgets: '0' is not a budget"),
    (["--poison", "random", "--budgets", "8/255", "--target-accuracy", "2"], "--target-accuracy must be in [0, 1]"),
    (["--poison", "random", "--budgets", "8/255", "--target-gap", "-1"], "--target-drop must be in [0, 1]"),
    (["--poison", "ops", "--budgets", "8/255"], "poison ops has no linf or l2 budget (its norm is l0)"),
    (["--poison", "none", "--budgets", "8/255"], "(its norm is none)"),
    (["--poison", "miue,em", "--budgets", "8/255"], "plan takes one --poison"),
    (["--poison", "nosuch", "--budgets", "8/255"], "unknown poison 'nosuch'"),
    (["--poison", "lsp", "--budgets", "linf:8/255"], "is an linf budget, but the poison's budget is l2"),
    (["--poison", "random", "--budgets", "3/510"], "whole number of 8-bit steps"),
    (["--poison", "random", "--budgets", "8/255", "--skip", "certify"], "--skip and --no-baseline do not apply"),
])
def test_bad_input_is_one_line_and_leaves_no_output(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(_plan(tmp_path, *args, "--out", str(out)))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not out.exists()


@pytest.mark.slow
def test_plan_on_digits(tmp_path, capsys):
    out = tmp_path / "plan"
    code = main(_plan(tmp_path, "--poison", "random", "--budgets", "8/255,2/255", "--target-accuracy", "1",
                      "--out", str(out)))
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "plan.json").read_text())
    assert doc["poison"] == "random" and doc["norm"] == "linf" and doc["defenses"] == ["jpeg", "jpeg50", "grayscale"]
    assert doc["targets"] == {"protected_accuracy_at_most": 1.0, "certified_drop_at_least": None,
                              "reading": "best-defended"}
    small, large = doc["budgets"]
    assert (small["budget"], large["budget"]) == ("2/255", "8/255")
    assert (small["epsilon"], large["epsilon"]) == (2 / 255, 8 / 255)
    for row in doc["budgets"]:
        assert 0 < row["measured"]["linf_max"] <= row["epsilon"] + 1e-6
        assert row["defended_accuracy"] == max(row["defenses"].values())
        assert row["defenses"][row["best_defense"]] == row["defended_accuracy"]
        assert row["attacker_best"] == attacker_best(row)
        assert row["certified"] is not None  # q = 0.5: 40 draws certify at eta/sigma = 0.1
        assert row["certified_drop"] == pytest.approx(doc["clean"]["certified"] - row["certified"])
        assert row["meets_targets"] is True
    # a larger budget: a larger perturbation, and a more visible one
    assert large["measured"]["linf_max"] > small["measured"]["linf_max"]
    assert large["measured"]["l2_mean"] > small["measured"]["l2_mean"]
    assert large["psnr"] < small["psnr"] and large["ssim"] < small["ssim"]
    assert doc["recommended"] == "2/255" == recommend(doc["budgets"], Targets(1.0, None))
    # the clean model, sigma, independent model and clean certificate once; each budget its own
    tasks = doc["execution"]["tasks"]
    count = lambda stage, poison: sum(t["stage"] == stage and t["poison"] == poison for t in tasks)  # noqa: E731
    assert count("train", "none") == 1 and count("independent", "none") == 1 and count("surrogate", "none") == 1
    assert sum(t["stage"] == "sigma" for t in tasks) == 1
    for label in ("random@2/255", "random@8/255"):
        assert count("craft", label) == count("train", label) == count("surrogate", label) == 1
    assert {t["poison"] for t in tasks if t["stage"] == "train"} == {"none", "random@2/255", "random@8/255"}
    assert "Recommendation" in (out / "plan.md").read_text() and (out / "plan.html").stat().st_size > 0
    assert {p.name for p in (out / "figures").iterdir()} == {"accuracy-budget.png", "certificate-budget.png",
                                                             "timeline.png"}
    # the same --out again is refused, and the plan is kept
    before = (out / "plan.json").read_bytes()
    assert main(_plan(tmp_path, "--poison", "random", "--budgets", "8/255", "--out", str(out))) == 2
    assert (out / "plan.json").read_bytes() == before
    # the 8/255 budget is the run's own poison: a run with the same settings finds every artifact cached
    run_out = tmp_path / "run"
    args = _plan(tmp_path, "--poison", "random", "--skip", "scores,recovery",
                 "--no-baseline", "--out", str(run_out))
    args[0] = "run"
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((run_out / "report.json").read_text())
    # only the run's own scope victims (K models trained independently; a plan trains none) are new
    tasks = report["execution"]["tasks"]
    assert {t["stage"] for t in tasks} == {"independent"} and len(tasks) == report["config"]["independent_models"]
    emp = report["poisons"]["random"]["empirical"]
    assert emp["protected_accuracy"] == large["protected_accuracy"]
    assert {d: v["accuracy"] for d, v in emp["defenses"].items()} == large["defenses"]
    assert np.isclose(report["poisons"]["random"]["budget"]["measured"], large["measured"]["linf_max"])
    # an l2 budget too small for one 8-bit step releases the clean images: said, not hidden
    capsys.readouterr()
    tiny = tmp_path / "tiny"
    assert main(_plan(tmp_path, "--poison", "lsp", "--budgets", "0.01", "--out", str(tiny))) == 0
    err = capsys.readouterr().err
    (row,) = json.loads((tiny / "plan.json").read_text())["budgets"]
    assert row["norm"] == "l2" and row["measured"]["linf_max"] == 0 and row["psnr"] is None
    assert "certify: warning: budget 0.01: the release equals the clean images" in err
    assert "## Warnings" in (tiny / "plan.md").read_text()
