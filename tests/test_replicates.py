"""Replicate seeds (`--seeds K`): intervals against scipy/statsmodels, the combination of K
replicates' sections into one (means, intervals, the certificate as one claim over all seeds), the
verdict on the upper end, bad input, and end to end on digits (distinct seeds, cache reuse per
seed, serial = Ray)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from certify.cli import main
from certify.intervals import binomial_interval, replicate_interval, summarize
from certify.replicates import combine, combine_certificate, record
from certify.verdict import VerdictConfig, judge

TINY = "train: {epochs: 2}\nsurrogate: {epochs: 1}\nsmoothing: {chunk: 10, sigma_draws: 5}\n"
VOLATILE = ("created", "timings", "command", "execution", "environment")


# ----------------------------------------------------------------------------- intervals

@pytest.mark.parametrize("acc, n", [(0.239, 1000), (0.0, 1000), (1.0, 359), (0.5, 10)])
def test_one_seed_gets_the_clopper_pearson_interval(acc, n):
    lo, hi = binomial_interval(acc, n)
    ref = proportion_confint(round(acc * n), n, alpha=0.05, method="beta")
    assert (lo, hi) == pytest.approx(ref)
    assert lo <= acc <= hi


def test_the_binomial_interval_holds_an_off_grid_mean():
    lo, hi = binomial_interval(0.2345, 1000)  # not a multiple of 1/1000: the mean itself stays inside
    assert lo <= 0.2345 <= hi


def test_several_seeds_get_students_t_on_their_mean():
    values = [0.180, 0.193, 0.225, 0.245]  # the MI-UE seeds
    ref = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert replicate_interval(values) == pytest.approx(ref)
    s = summarize(values, 1000)
    assert s["method"] == "student-t" and s["mean"] == pytest.approx(0.21075)
    assert s["interval"][0] < s["mean"] < s["interval"][1]


def test_replicate_intervals_stay_in_the_unit_interval():
    lo, hi = replicate_interval([0.99, 1.0, 0.95])
    assert 0 <= lo and hi == 1.0
    with pytest.raises(ValueError):
        replicate_interval([0.5])


def test_one_value_is_its_own_mean():
    s = summarize([0.23900000000000002], 1000)
    assert s["mean"] == 0.23900000000000002 and s["method"] == "clopper-pearson"


# ----------------------------------------------------------------------------- combining replicates

GRID = (0.05, 0.1, 0.5)


def _cert(ups, lows, max_eta):
    return {"sigma": 0.02, "q": 0.9, "alpha": 0.005, "samples": 100, "max_certified_eta": max_eta,
            "curve": [{"eta_over_sigma": r, "eta": 0.02 * r, "k": 97, "learnability": u, "lower": lo}
                      for r, u, lo in zip(GRID, ups, lows)]}


def _section(clean, protected, jpeg, pgd, cert) -> dict:
    return {"budget": {"norm": "linf"}, "sal_ud": {"ud": 1.0},
            "empirical": {"clean_accuracy": clean, "protected_accuracy": protected, "peak_protected_accuracy": protected + 0.01,
                          "protected_history": [protected], "defenses": {"jpeg": {"accuracy": jpeg, "peak_accuracy": jpeg}}},
            "recovery": {"pgd": {"curve": [{"eta_over_sigma": 0.5, "accuracy": pgd - 0.05},
                                           {"eta_over_sigma": 1.0, "accuracy": pgd}]}},
            "certificate": cert}


SECTIONS = [_section(0.50, 0.20, 0.40, 0.30, _cert([0.30, 0.31, None], [0.10, 0.09, None], 0.02)),
            _section(0.48, 0.25, 0.42, 0.33, _cert([0.33, 0.35, None], [0.12, 0.08, 0.01], 0.01)),
            _section(0.49, 0.22, 0.38, 0.31, _cert([0.29, 0.36, 0.5], [0.11, 0.10, None], 0.03))]


def test_three_replicates_become_means_intervals_and_per_seed_records():
    out = combine(SECTIONS, [7, 8, 9], 1000, alpha=0.01)
    emp = out["empirical"]
    assert emp["protected_accuracy"] == pytest.approx(0.22333333)
    assert emp["clean_accuracy"] == pytest.approx(0.49)
    assert emp["seeds"] == 3 and emp["interval_method"] == "student-t" and emp["confidence"] == 0.95
    for field in ("clean", "protected", "peak_protected"):
        lo, hi = emp[f"{field}_interval"]
        assert lo < emp[f"{field}_accuracy"] < hi
    assert emp["protected_interval"] == pytest.approx(list(replicate_interval([0.20, 0.25, 0.22])))
    assert emp["defenses"]["jpeg"]["accuracy"] == pytest.approx(0.40)
    assert emp["defenses"]["jpeg"]["interval"] == pytest.approx(list(replicate_interval([0.40, 0.42, 0.38])))
    assert emp["protected_history"] == [0.20]  # the first replicate's curves
    assert [r["seed"] for r in out["replicates"]] == [7, 8, 9]
    assert out["replicates"][1] == {"seed": 8, "clean_accuracy": 0.48, "protected_accuracy": 0.25,
                                    "peak_protected_accuracy": 0.26, "defenses": {"jpeg": 0.42},
                                    "defenses_peak": {"jpeg": 0.42},
                                    "certified": {"0.05": 0.33, "0.1": 0.35, "0.5": None}, "sigma": 0.02,
                                    "recovery": {"pgd": 0.33}}
    assert out["recovery"]["pgd"]["best_accuracy"] == pytest.approx(0.31333333)
    assert out["sal_ud"] == {"ud": 1.0} and out["budget"] == {"norm": "linf"}


def test_the_certificate_is_one_claim_over_every_replicate():
    c = combine_certificate([s["certificate"] for s in SECTIONS], alpha=0.01)
    assert [p["learnability"] for p in c["curve"]] == [0.33, 0.36, None]  # largest bound; any abstention abstains
    assert [p["lower"] for p in c["curve"]] == [0.10, 0.08, None]  # smallest lower bound
    assert c["max_certified_eta"] == 0.01
    assert c["alpha"] == 0.01 and c["replicate_alpha"] == pytest.approx(0.01 / 3) and c["replicates"] == 3


def test_seeds_with_different_sigmas_are_named_in_the_guarantee():
    from certify.report.content import _sigmas

    assert _sigmas({"replicates": [{"sigma": 0.02}, {"sigma": 0.02}]}) == ""
    text = _sigmas({"replicates": [{"sigma": 0.02}, {"sigma": 0.01}, {"sigma": 0.02}]})
    assert "σ = 0.02, 0.01, 0.02" in text and "first seed's (σ = 0.02)" in text


def test_one_replicate_keeps_its_numbers():
    sec = _section(0.5, 0.2, 0.4, 0.3, _cert([0.3, 0.31, None], [0.1, 0.09, None], 0.02))
    sec["certificate"]["alpha"] = 0.01
    out = combine([sec], [0], 1000, alpha=0.01)
    for field in ("clean_accuracy", "protected_accuracy", "peak_protected_accuracy"):
        assert out["empirical"][field] == sec["empirical"][field]
    assert out["empirical"]["interval_method"] == "clopper-pearson"
    assert out["empirical"]["protected_interval"] == pytest.approx(list(proportion_confint(200, 1000, 0.05, "beta")))
    assert out["empirical"]["defenses"]["jpeg"]["accuracy"] == 0.4
    assert out["certificate"]["curve"] == sec["certificate"]["curve"]
    assert out["recovery"]["pgd"]["best_accuracy"] == 0.3
    assert record(0, sec)["recovery"] == {"pgd": 0.3}


# ----------------------------------------------------------------------------- the verdict

def test_the_verdict_reads_the_upper_end_of_the_interval():
    from certify.verdict import MINIMUM_SUITE

    # the minimum attacker suite ran and reached little, so the undefended interval decides
    clean = {"clean_accuracy": 0.5, "seeds": 3,
             "defenses": {d: {"accuracy": 0.1, "interval": [0.09, 0.11]} for d in MINIMUM_SUITE.defenses}}
    pgd = {"pgd": {"curve": [{"eta": 0.1, "eta_over_sigma": 5.0, "accuracy": 0.1, "attacker_accuracy": 0.3}]}}
    tight = {"empirical": {**clean, "protected_accuracy": 0.24, "protected_interval": [0.23, 0.25]}, "recovery": pgd}
    wide = {"empirical": {**clean, "protected_accuracy": 0.24, "protected_interval": [0.20, 0.28]}, "recovery": pgd}
    assert judge(tight, None, VerdictConfig())["level"] == "strong"
    v = judge(wide, None, VerdictConfig())
    assert v["level"] == "partial"  # the mean alone would read strong
    assert "0.240 [0.200, 0.280]" in v["reasons"][0]
    assert any("the upper end 0.280 = 0.56 × clean" in r for r in v["reasons"])
    assert "over 3 seeds" in " ".join(v["reasons"])


def test_a_defense_whose_interval_reaches_higher_is_the_attackers_best():
    sec = {"empirical": {"clean_accuracy": 0.5, "seeds": 2, "protected_accuracy": 0.30, "protected_interval": [0.29, 0.31],
                         "defenses": {"jpeg": {"accuracy": 0.28, "interval": [0.15, 0.41]}}}}
    v = judge(sec, None, VerdictConfig())
    assert v["level"] == "weak" and any("(jpeg); the upper end 0.410" in r for r in v["reasons"])


def test_one_seed_says_so_and_suggests_more():
    sec = {"empirical": {"clean_accuracy": 0.5, "seeds": 1, "protected_accuracy": 0.2, "protected_interval": [0.18, 0.23]}}
    assert any("--seeds 3" in r and "one seed" in r for r in judge(sec, None, VerdictConfig())["reasons"])


def test_a_plans_accuracy_target_holds_for_the_upper_end():
    from certify.planning.targets import Targets, meets

    row = {"protected_accuracy": 0.24, "certified_drop": None}
    target = Targets(protected_accuracy_at_most=0.25)
    assert meets(row, target)  # a plan from before intervals: the value itself
    assert not meets({**row, "protected_interval": [0.20, 0.28]}, target)
    assert meets({**row, "protected_interval": [0.23, 0.25]}, target)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("value, says", [("0", "seeds must be > 0"), ("-2", "seeds must be > 0"),
                                          ("21", "seeds must be at most 20"), ("2.5", "invalid int value")])
@pytest.mark.parametrize("command", ["run", "plan"])
def test_bad_seed_counts_are_one_line_and_write_nothing(tmp_path, capsys, value, says, command):
    out = tmp_path / "out"
    extra = ["--budgets", "8/255"] if command == "plan" else []
    code = main([command, "--poison", "random", "--dataset", "digits", "--seeds", value, "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_seed_count_in_a_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seeds: [3]\n")
    assert main(["run", "--dataset", "digits", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "seeds" in capsys.readouterr().err


# ----------------------------------------------------------------------------- end to end

def _run(tmp_path, capsys, name: str, cache: str, *extra: str) -> dict:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    code = main(["--quiet", "run", "--poison", "random", "--dataset", "digits", "--config", str(cfg), "--samples", "20",
                 "--skip", "scores", "--defense", "jpeg", "--seed", "3", "--out", str(tmp_path / name),
                 "--cache-dir", str(tmp_path / cache), *extra])
    assert code == 0, capsys.readouterr().err
    return json.loads((tmp_path / name / "report.json").read_text())


def _numbers(report: dict) -> dict:
    r = {k: v for k, v in report.items() if k not in VOLATILE}
    r["config"] = {k: v for k, v in r["config"].items() if k not in ("out", "cache_dir", "executor", "workers")}
    return r


@pytest.mark.slow
def test_replicates_end_to_end_reuse_the_cache_and_ray_equals_serial(tmp_path, capsys, ray_local):
    one = _run(tmp_path, capsys, "one", "cache", "--executor", "serial")
    two = _run(tmp_path, capsys, "two", "cache", "--executor", "serial", "--seeds", "2")
    assert one["seeds"] == [3] and two["seeds"] == [3, 4]
    assert one["dataset"]["test_source"] == "digits:test"  # the dataset's own split, named in the guarantee
    for name in ("none", "random"):
        a, b = one["poisons"][name], two["poisons"][name]
        assert [r["seed"] for r in b["replicates"]] == [3, 4]
        # seed 3 of the K = 2 run is the K = 1 run, taken from the cache
        assert b["replicates"][0] == a["replicates"][0]
        assert a["empirical"]["protected_accuracy"] == a["replicates"][0]["protected_accuracy"]
        assert a["empirical"]["interval_method"] == "clopper-pearson"
        e = b["empirical"]
        values = [r["protected_accuracy"] for r in b["replicates"]]
        assert e["protected_accuracy"] == pytest.approx(np.mean(values)) and e["seeds"] == 2
        assert e["protected_interval"][0] <= e["protected_accuracy"] <= e["protected_interval"][1]
        assert e["defenses"]["jpeg"]["interval"][0] <= e["defenses"]["jpeg"]["accuracy"] <= e["defenses"]["jpeg"]["interval"][1]
        assert b["certificate"]["replicates"] == 2 and b["certificate"]["replicate_alpha"] == pytest.approx(0.005)
        assert set(b["replicates"][1]["recovery"]) == {"pgd"}
    # the summary's draws are the first seed's; the second seed trained models of its own
    assert one["poisons"]["random"]["certificate"]["draws"] == two["poisons"]["random"]["certificate"]["draws"]
    assert two["poisons"]["none"]["replicates"][0]["clean_accuracy"] != two["poisons"]["none"]["replicates"][1]["clean_accuracy"]
    cached = {t["stage"] for t in two["execution"]["tasks"]}
    assert len(two["execution"]["tasks"]) < 2 * len(one["execution"]["tasks"])  # seed 3's tasks came from the cache
    assert {"craft", "train", "surrogate"} <= cached
    assert "over 2 seeds" in " ".join(two["poisons"]["random"]["verdict"]["reasons"])

    on_ray = _run(tmp_path, capsys, "ray", "ray-cache", "--executor", "ray", "--workers", "2", "--seeds", "2")
    assert {t["node"] for t in on_ray["execution"]["tasks"]} != {"driver"}
    assert _numbers(on_ray) == _numbers(two)


@pytest.mark.slow
def test_a_plan_over_two_seeds_has_means_and_intervals(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "plan"
    code = main(["--quiet", "plan", "--poison", "random", "--budgets", "4/255,8/255", "--dataset", "digits", "--config",
                 str(cfg), "--samples", "20", "--seeds", "2", "--executor", "serial", "--defense", "jpeg",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--target-accuracy", "1"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "plan.json").read_text())
    assert doc["seeds"] == [0, 1] and doc["interval_method"] == "student-t"
    assert doc["certificate"]["replicate_alpha"] == pytest.approx(0.005)
    for row in doc["budgets"]:
        lo, hi = row["protected_interval"]
        assert lo <= row["protected_accuracy"] <= hi
        assert row["defense_intervals"]["jpeg"][0] <= row["defenses"]["jpeg"] <= row["defense_intervals"]["jpeg"][1]
        assert row["meets_targets"] is True
    assert "means over 2 seeds" in (out / "plan.md").read_text()
