"""The verdict: a pure function of a poison's report section, the clean control's and the thresholds,
tested on crafted sections for each level and boundary, and on the stored reference reports."""
import json
from pathlib import Path

import pytest

from certify.config import load_config
from certify.errors import UserError
from certify.report.schema import VERDICT
from certify.verdict import MINIMUM_SUITE, VerdictConfig, judge, untried, verdicts

CFG = VerdictConfig()
CLEAN = 0.5
REPORTS = Path(__file__).resolve().parent.parent / "reports"
SUITE = {d: 0.1 for d in MINIMUM_SUITE.defenses}  # the minimum suite, each defense leaving 0.2 × clean
PGD = [(0.5, 0.1, 0.3), (5.0, 0.12, 0.4)]  # (η/σ, test accuracy, attacker-split accuracy)


def cert(at_01: float | None, samples: int = 100, surrogate: float | None = None) -> dict:
    """The parts of a certificate the verdict reads: the curve (η/σ 0.05, 0.1, 0.5), N and the surrogate."""
    out = {"samples": samples, "curve": [{"eta_over_sigma": 0.05, "learnability": at_01},
                                         {"eta_over_sigma": 0.1, "learnability": at_01},
                                         {"eta_over_sigma": 0.5, "learnability": None}]}
    if surrogate is not None:
        out["surrogate_accuracy"] = surrogate
    return out


def section(protected: float, *, clean: float = CLEAN, defenses: dict | None = SUITE, recovery: dict | None = None,
            certified: float | None | str = 0.2, surrogate: float | None = None) -> dict:
    """A poison's section; by default the minimum suite ran (defenses at 0.1, pgd at 0.1-0.12). A
    recovery point is (η/σ, test accuracy) or (η/σ, test accuracy, attacker-split accuracy)."""
    sec = {"budget": {"norm": "linf", "epsilon": 8 / 255, "measured": 8 / 255},
           "empirical": {"clean_accuracy": clean, "protected_accuracy": protected,
                         "peak_protected_accuracy": protected}}
    if defenses:
        sec["empirical"]["defenses"] = {d: {"accuracy": a, "peak_accuracy": a} for d, a in defenses.items()}
    recovery = {"pgd": PGD} if recovery is None else recovery
    if recovery:
        sec["recovery"] = {m: {"start": "surrogate", "bn": "frozen", "constraint": "ball", "attacker_images": 1000,
                               "curve": [{"eta": 0.02 * p[0], "eta_over_sigma": p[0], "accuracy": p[1],
                                          **({"attacker_accuracy": p[2]} if len(p) > 2 else {})} for p in pts]}
                           for m, pts in recovery.items()}
    if certified != "skip":
        sec["certificate"] = cert(certified, surrogate=surrogate)
    return sec


CONTROL = section(CLEAN, certified=0.45, defenses={d: CLEAN for d in MINIMUM_SUITE.defenses})


def test_strong_needs_the_minimum_suite_and_untried_names_what_is_missing():
    assert judge(section(0.2), CONTROL, CFG)["level"] == "strong"
    assert untried(section(0.2)) is None
    v = judge(section(0.2, defenses={"jpeg": 0.1}), CONTROL, CFG)
    assert v["level"] == "partial"
    assert v["reasons"][-1] == ("untried: jpeg50, grayscale: strong needs the minimum attacker suite, so the level "
                                "is at most partial (run with --defense jpeg,jpeg50,grayscale)")
    v = judge(section(0.2, defenses=None, recovery={}), CONTROL, CFG)
    assert v["level"] == "partial"
    assert v["reasons"][-1].startswith("untried: jpeg, jpeg50, grayscale, a recovery attack: ")
    assert v["reasons"][-1].endswith("(run with --defense jpeg,jpeg50,grayscale; drop recovery and certify from "
                                     "--skip (recovery starts from the certificate's surrogate))")
    only_recovery = untried(section(0.2, defenses={**SUITE, "at8": 0.1}, recovery={}))
    assert only_recovery.startswith("untried: a recovery attack: ") and "--defense" not in only_recovery
    # the run's other defenses stay in the suggested flag
    assert untried(section(0.2, defenses={"at8": 0.1}))[-len("at8)"):] == "at8)"
    # the cap never raises a level, and the reason is there at every level
    weak = judge(section(0.45, defenses=None), CONTROL, CFG)
    assert weak["level"] == "weak" and weak["reasons"][-1].startswith("untried: jpeg, jpeg50, grayscale: ")


@pytest.mark.parametrize("protected, level", [
    (0.25, "strong"),     # exactly 0.5 × clean
    (0.2501, "partial"),
    (0.40, "partial"),    # exactly 0.8 × clean
    (0.4001, "weak"),
    (0.475, "weak"),      # exactly 0.95 × clean
    (0.4751, "none"),
    (0.55, "none"),       # above clean
])
def test_each_level_and_its_boundaries(protected, level):
    v = judge(section(protected), CONTROL, CFG)
    assert v["level"] == level
    assert v["reasons"][0] == f"protected accuracy {protected:.3f} = {protected / CLEAN:.2f} × clean (0.500)"
    assert next(r for r in v["reasons"] if r.startswith("attacker's best")).endswith(f": {level})")


def test_the_issues_example_reads_as_measured():
    control = section(0.486, clean=0.486, certified=0.465, defenses={d: 0.486 for d in SUITE})
    v = judge(section(0.212, clean=0.486, certified=0.275), control, CFG)
    assert v["level"] == "strong"
    assert v["reasons"][0] == "protected accuracy 0.212 = 0.44 × clean (0.486)"
    assert v["reasons"][-1] == "certified learnability 0.275, 0.190 below the clean control's 0.465 at η/σ = 0.1"


def test_the_best_defense_counts_against_the_protection():
    v = judge(section(0.1, defenses={**SUITE, "grayscale": 0.3, "jpeg": 0.44}), CONTROL, CFG)
    assert v["level"] == "weak"  # 0.44 = 0.88 × the control under JPEG, though undefended is 0.2 × clean
    assert "jpeg reaches 0.440 = 0.88 × the clean control under jpeg (0.500)" in v["reasons"]
    assert "grayscale reaches 0.300 = 0.60 × the clean control under grayscale (0.500)" in v["reasons"]
    assert ("attacker's best: 0.440 (jpeg) = 0.88 × the clean control under jpeg (0.500) (at most 0.95: weak)"
            in v["reasons"])
    # a defense that lowers accuracy further changes nothing
    assert judge(section(0.2, defenses={**SUITE, "at8": 0.1}), CONTROL, CFG)["level"] == "strong"


def test_a_defense_is_compared_with_the_clean_control_under_the_same_defense():
    """Adversarial training: clean data reach 0.332 and the poison 0.362 (reports/reference/defense-at8-n100):
    the defense removed the poison, whatever the ratio to the undefended clean model (0.74)."""
    control = section(0.486, clean=0.486, certified=0.45, defenses={**{d: 0.486 for d in SUITE}, "at8": 0.332})
    v = judge(section(0.272, clean=0.486, defenses={**SUITE, "at8": 0.362}), control, CFG)
    assert v["level"] == "none"
    assert "at8 reaches 0.362 = 1.09 × the clean control under at8 (0.332)" in v["reasons"]
    # the same numbers against the undefended clean model would read partial: without the control
    # under at8 the verdict falls back to it and says so
    alone = section(0.486, clean=0.486, certified=0.45, defenses={d: 0.486 for d in SUITE})
    v = judge(section(0.272, clean=0.486, defenses={**SUITE, "at8": 0.362}), alone, CFG)
    assert v["level"] == "partial"
    assert ("at8 compared with the clean model trained normally: the clean control was not trained under it "
            "in this run") in v["reasons"]
    assert judge(section(0.272, clean=0.486, defenses={**SUITE, "at8": 0.362}), None, CFG)["level"] == "partial"


def test_recovery_early_stops_on_the_attackers_split_never_on_the_test_set():
    """The test-set peak (η/σ = 5, 0.45) is not where the attacker's own split peaks (η/σ = 0.5):
    the verdict reads the test accuracy at the attacker's pick."""
    rec = {"pgd": [(0.5, 0.2, 0.6), (5.0, 0.45, 0.5), (20.0, 0.1, 0.4)]}
    v = judge(section(0.1, recovery=rec), CONTROL, CFG)
    assert v["level"] == "strong"  # 0.2 = 0.4 × clean; the test peak 0.45 would read weak
    assert "recovery pgd early-stopped on the attacker's 1000 clean images (η/σ = 0.5) reaches 0.200" in v["reasons"]
    # the attacker's split peaking where the test accuracy is high counts in full
    rec = {"pgd": [(0.5, 0.2, 0.4), (5.0, 0.35, 0.6)], "greedy": [(0.5, 0.3, 0.5)]}
    v = judge(section(0.1, recovery=rec), CONTROL, CFG)
    assert v["level"] == "partial"  # 0.35 = 0.7 × clean
    assert any(r.startswith("attacker's best: 0.350 (recovery pgd early-stopped") for r in v["reasons"])


def test_a_curve_without_attacker_accuracies_stands_in_with_its_test_peak_and_says_so():
    v = judge(section(0.1, recovery={"pgd": [(0.5, 0.2), (5.0, 0.35), (20.0, 0.1)]}), CONTROL, CFG)
    assert v["level"] == "partial"
    assert "recovery pgd at its test-set peak (η/σ = 5) reaches 0.350" in v["reasons"]
    assert any(r.startswith("recovery pgd records no accuracy on the attacker's own split") for r in v["reasons"])


def test_the_protected_models_test_set_peak_is_never_read():
    sec = section(0.2)
    sec["empirical"]["peak_protected_accuracy"] = 0.49
    assert judge(sec, CONTROL, CFG) == judge(section(0.2), CONTROL, CFG)


def test_a_surrogate_unlike_the_victim_is_named():
    """OPS: the certificate's surrogate 0.299, the victim 0.497."""
    v = judge(section(0.497, clean=0.5, surrogate=0.299), CONTROL, CFG)
    assert ("the certificate's surrogate reaches 0.299 while the victim reaches 0.497 (more than 0.1 apart): "
            "the certificate does not speak for this victim") in v["reasons"]
    assert not any("surrogate reaches" in r for r in judge(section(0.2, surrogate=0.3), CONTROL, CFG)["reasons"])
    assert any("surrogate reaches" in r
               for r in judge(section(0.2, surrogate=0.3), CONTROL, VerdictConfig(surrogate_gap=0.05))["reasons"])


def test_random_noise_over_three_seeds_reads_none():
    """Random noise: every accuracy within the seeds' spread of the clean model's (the control's under
    each defense), over 3 seeds with Student-t intervals."""
    from tests.sample_reports import summarize

    seeds = lambda m: summarize([m - 0.01, m, m + 0.012], 1000)  # noqa: E731
    clean, clean_iv = seeds(0.486)
    control = section(clean, clean=clean, certified=0.45,
                      defenses={"jpeg": 0.469, "jpeg50": 0.478, "grayscale": 0.424})
    sec = section(0.0, clean=clean, certified=0.445)
    emp = sec["empirical"]
    emp["protected_accuracy"], emp["protected_interval"] = seeds(0.481)
    emp.update(clean_interval=clean_iv, seeds=3, interval_method="student-t")
    for d, m in (("jpeg", 0.466), ("jpeg50", 0.474), ("grayscale", 0.421)):
        emp["defenses"][d]["accuracy"], emp["defenses"][d]["interval"] = seeds(m)
    sec["recovery"]["pgd"]["best_accuracy"], sec["recovery"]["pgd"]["best_interval"] = seeds(0.483)
    v = judge(sec, control, CFG)
    assert v["level"] == "none"
    assert "over 3 seeds: 95 % Student-t intervals of the per-seed accuracies" in v["reasons"]
    assert not any(r.startswith("untried") for r in v["reasons"])


def test_strong_needs_the_certificate_to_confirm():
    at = CONTROL["certificate"]["curve"][1]["learnability"]
    confirmed = judge(section(0.2, certified=at - 0.05), CONTROL, CFG)  # exactly the gap
    assert confirmed["level"] == "strong"
    v = judge(section(0.2, certified=at - 0.049), CONTROL, CFG)
    assert v["level"] == "partial"
    assert v["reasons"][-2].startswith("certified learnability 0.401 is not 0.05 below the clean control's 0.450")
    assert v["reasons"][-1].startswith("strong needs the certificate to confirm the protection: partial (more draws")
    # it never lowers partial or weak
    assert judge(section(0.35, certified=at), CONTROL, CFG)["level"] == "partial"
    assert judge(section(0.45, certified=at + 0.1), CONTROL, CFG)["level"] == "weak"


@pytest.mark.parametrize("sec, control, why", [
    (section(0.2, certified="skip"), CONTROL, "certificate not computed"),
    (section(0.2), None, "no clean-control certificate to compare with"),
    (section(0.2), section(CLEAN, certified="skip", defenses={d: CLEAN for d in SUITE}),
     "no clean-control certificate to compare with"),
    (section(0.2, certified=None), section(CLEAN, certified=None, defenses={d: CLEAN for d in SUITE}),
     "the certificate abstains at η/σ = 0.1 (N = 100)"),
])
def test_without_a_comparable_certificate_it_judges_the_accuracies_and_says_so(sec, control, why):
    v = judge(sec, control, CFG)
    assert v["level"] == "strong"
    assert v["reasons"][-1] == f"{why}: judged on the measured accuracies alone"


def test_a_point_missing_from_the_grid_and_another_eta():
    v = judge(section(0.2), CONTROL, VerdictConfig(eta_over_sigma=0.25))
    assert v["level"] == "strong"
    assert v["reasons"][-1] == "the certificate has no point at η/σ = 0.25: judged on the measured accuracies alone"
    # at η/σ = 0.05 the same numbers are compared
    assert judge(section(0.2, certified=0.44), CONTROL, VerdictConfig(eta_over_sigma=0.05))["level"] == "partial"


def test_thresholds_come_from_the_config():
    strict = VerdictConfig(strong=0.3, partial=0.5, weak=0.6, certified_gap=0.3)
    assert judge(section(0.2), CONTROL, strict)["level"] == "partial"  # 0.4 × clean
    assert judge(section(0.1, certified=0.2), CONTROL, strict)["level"] == "partial"  # gap 0.25 < 0.3
    assert judge(section(0.1, certified=0.15), CONTROL, strict)["level"] == "strong"
    assert judge(section(0.31), CONTROL, strict)["level"] == "none"


def test_control_gets_none_and_every_verdict_fits_the_schema():
    import jsonschema

    out = verdicts({"none": CONTROL, "a": section(0.2), "b": section(0.6)}, CFG)
    assert out["none"] == {"level": "none", "reasons": ["the clean control: no perturbation"]}
    assert out["a"]["level"] == "strong" and out["b"]["level"] == "none"
    for v in out.values():
        jsonschema.validate(v, VERDICT)
    assert judge(section(0.0, clean=0.0), None, CFG)["level"] == "none"


@pytest.mark.parametrize("values, message", [
    ({"strong": 0.9}, "0 < strong <= partial <= weak <= 1"),
    ({"weak": 1.2}, "0 < strong <= partial <= weak <= 1"),
    ({"strong": 0}, "verdict.strong must be > 0"),
    ({"eta_over_sigma": -0.1}, "verdict.eta_over_sigma must be > 0"),
    ({"certified_gap": -0.01}, "verdict.certified_gap must be >= 0"),
    ({"certified_gap": 2}, "verdict.certified_gap must be at most 1"),
    ({"surrogate_gap": -0.1}, "verdict.surrogate_gap must be >= 0"),
    ({"surrogate_gap": 1.5}, "verdict.surrogate_gap must be at most 1"),
    ({"strength": 0.5}, "unknown key 'verdict.strength'"),
    ({"strong": "half"}, "verdict.strong must be a number"),
])
def test_config_is_validated_naming_the_field(values, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as e:
        load_config(None, {"dataset": "digits", "verdict": values})
    assert "\n" not in str(e.value)


def test_config_yaml_sets_thresholds(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("verdict:\n  strong: 0.4\n  certified_gap: 0.1\n")
    cfg = load_config(str(p), {"dataset": "digits"})
    assert (cfg.verdict.strong, cfg.verdict.partial, cfg.verdict.certified_gap) == (0.4, 0.8, 0.1)


@pytest.mark.parametrize("report, levels", [
    # JPEG-10 restores EM to 0.96 of the clean control under JPEG-10 (0.450 / 0.469): none
    ("reference/defenses-jpeg-grayscale-n100", {"none": "none", "miue": "weak", "em": "none", "random": "none"}),
    # adversarial training: the poisons reach more than clean data under it (0.362 vs 0.332)
    ("reference/defense-at8-n100", {"none": "none", "miue": "none", "em": "none", "random": "none"}),
    ("reference/miue-em-random-n100", {"none": "none", "miue": "partial", "em": "partial", "random": "none"}),
    # made with the default suite over 3 seeds: JPEG-10 restores OPS, upper end 0.900 = 0.97 x its control
    ("baseline/digits-gate", {"none": "none", "random": "none", "ops": "none"}),
    # five seeds, no defense: strong undefended, capped at partial (the suite is untried)
    ("reference/seeds-k5", {"none": "none", "miue": "partial", "em": "partial", "pue": "partial", "random": "none"}),
])
def test_defaults_on_the_stored_reports(report, levels):
    """The README's reading of the defaults on reports made before the suite and the attacker-split
    accuracies: defenses against the control under them, recovery at its test-set peak."""
    poisons = json.loads((REPORTS / report / "report.json").read_text())["poisons"]
    assert {n: v["level"] for n, v in verdicts(poisons, CFG).items()} == levels


def test_thresholds_do_not_block_a_resume(tmp_path):
    """The verdict only reads the results: a run resumed with other thresholds is the same run."""
    from certify.rundir import comparable as _comparable

    base = {"dataset": "digits", "poisons": ["random"]}
    judged = load_config(None, {**base, "verdict": {"strong": 0.3}})
    assert judged.verdict.strong == 0.3
    assert _comparable(judged) == _comparable(load_config(None, base))
    assert _comparable(load_config(None, {**base, "seed": 5})) != _comparable(load_config(None, base))


@pytest.mark.parametrize("defenses, recovery, says", [
    ({**SUITE, "jpeg": 0.44}, None, "JPEG compression of the training set restores the accuracy, so try a JPEG-robust"),
    ({**SUITE, "grayscale": 0.44}, None, "grayscale conversion restores the accuracy"),
    ({**SUITE, "at8": 0.44}, None, "adversarial training restores the accuracy, so try a poison crafted against "
                                   "adversarial training (rem)"),
    ({**SUITE, "cutout": 0.44}, None, "training under cutout restores the accuracy"),
    (SUITE, {"pgd": [(0.5, 0.44, 0.9)]}, "a recovery attack near the trained weights restores the accuracy"),
])
def test_a_level_held_down_by_an_attack_names_what_would_raise_it(defenses, recovery, says):
    v = judge(section(0.1, defenses=defenses, recovery=recovery), CONTROL, CFG, "em")
    assert v["level"] == "weak"
    remedy = next(r for r in v["reasons"] if r.startswith("to raise the level: "))
    assert says in remedy and "`certify plan --poison em --budgets 8/255,16/255`" in remedy


def test_an_undefended_level_suggests_a_larger_budget_and_strong_suggests_nothing():
    v = judge(section(0.3), CONTROL, CFG, "miue")  # 0.6 × clean undefended, every defense lower
    assert v["level"] == "partial"
    assert any(r.startswith("to raise the level: a larger budget (`certify plan --poison miue") for r in v["reasons"])
    strong = judge(section(0.2), CONTROL, CFG, "miue")
    assert strong["level"] == "strong" and not any("to raise the level" in r for r in strong["reasons"])


@pytest.mark.parametrize("norm, budgets", [("l2", "`certify plan --poison p --budgets 1.0,2.0`"), ("l0", None)])
def test_the_remedy_names_budgets_in_the_poisons_own_norm(norm, budgets):
    """An l2 poison is offered l2 budgets; an l0 poison (OPS's one pixel, which plan cannot vary) is
    offered none (it was offered 8/255,16/255, l-inf budgets)."""
    for sec in (section(0.3), section(0.1, defenses={**SUITE, "jpeg": 0.44})):
        sec["budget"]["norm"] = norm
        remedy = next(r for r in judge(sec, CONTROL, CFG, "p")["reasons"] if r.startswith("to raise the level: "))
        assert "/255" not in remedy
        assert (budgets in remedy) if budgets else ("certify plan" not in remedy and "larger budget" not in remedy)
