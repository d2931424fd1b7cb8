"""The verdict: a pure function of a poison's report section, the clean control's and the thresholds,
tested on crafted sections for each level and boundary, and on the stored reference reports."""
import json
from pathlib import Path

import pytest

from certify.config import load_config
from certify.errors import UserError
from certify.report.schema import VERDICT
from certify.verdict import UNTRIED, VerdictConfig, judge as judge_with_note, verdicts

CFG = VerdictConfig()
CLEAN = 0.5
REPORTS = Path(__file__).resolve().parent.parent / "reports"


def cert(at_01: float | None, samples: int = 100) -> dict:
    """The parts of a certificate the verdict reads: the curve (η/σ 0.05, 0.1, 0.5) and N."""
    return {"samples": samples, "curve": [{"eta_over_sigma": 0.05, "learnability": at_01},
                                          {"eta_over_sigma": 0.1, "learnability": at_01},
                                          {"eta_over_sigma": 0.5, "learnability": None}]}


def section(protected: float, *, clean: float = CLEAN, defenses: dict | None = None, recovery: dict | None = None,
            certified: float | None | str = 0.2) -> dict:
    sec = {"budget": {"norm": "linf", "epsilon": 8 / 255, "measured": 8 / 255},
           "empirical": {"clean_accuracy": clean, "protected_accuracy": protected,
                         "peak_protected_accuracy": protected}}
    if defenses:
        sec["empirical"]["defenses"] = {d: {"accuracy": a, "peak_accuracy": a} for d, a in defenses.items()}
    if recovery:
        sec["recovery"] = {m: {"start": "surrogate", "bn": "frozen", "constraint": "ball",
                               "curve": [{"eta": 0.02 * r, "eta_over_sigma": r, "accuracy": a} for r, a in pts]}
                           for m, pts in recovery.items()}
    if certified != "skip":
        sec["certificate"] = cert(certified)
    return sec


CONTROL = section(CLEAN, certified=0.45)


def judge(sec: dict, control: dict | None, cfg: VerdictConfig) -> dict:
    """The verdict without the note that nothing was tried against the poison (tested on its own)."""
    v = judge_with_note(sec, control, cfg)
    return {**v, "reasons": [r for r in v["reasons"] if r != UNTRIED]}


def test_a_verdict_with_nothing_tried_against_it_says_so():
    assert judge_with_note(section(0.2), CONTROL, CFG)["reasons"][-1] == UNTRIED
    assert UNTRIED not in judge_with_note(section(0.2, defenses={"jpeg": 0.44}), CONTROL, CFG)["reasons"]
    assert UNTRIED not in judge_with_note(section(0.2, recovery={"pgd": [(5.0, 0.3)]}), CONTROL, CFG)["reasons"]


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
    assert v["reasons"][-2].endswith(f": {level})")


def test_the_issues_example_reads_as_measured():
    v = judge(section(0.212, clean=0.486, certified=0.275), section(0.486, clean=0.486, certified=0.465), CFG)
    assert v["level"] == "strong"
    assert v["reasons"][0] == "protected accuracy 0.212 = 0.44 × clean (0.486)"
    assert v["reasons"][-1] == "certified learnability 0.275, 0.190 below the clean control's 0.465 at η/σ = 0.1"


def test_the_best_defense_counts_against_the_protection():
    v = judge(section(0.1, defenses={"grayscale": 0.3, "jpeg": 0.44}), CONTROL, CFG)
    assert v["level"] == "weak"  # 0.44 = 0.88 × clean, though undefended is 0.2 × clean
    assert "jpeg reaches 0.440" in v["reasons"] and "grayscale reaches 0.300" in v["reasons"]
    assert "attacker's best: 0.440 (jpeg) = 0.88 × clean (at most 0.95 × clean: weak)" in v["reasons"]
    # a defense that lowers accuracy further changes nothing
    assert judge(section(0.2, defenses={"at8": 0.1}), CONTROL, CFG)["level"] == "strong"


def test_recovery_attacks_count_at_their_best_eta():
    v = judge(section(0.1, recovery={"pgd": [(0.5, 0.2), (5.0, 0.35), (20.0, 0.1)], "greedy": [(0.5, 0.3)]}),
              CONTROL, CFG)
    assert v["level"] == "partial"  # 0.35 = 0.7 × clean
    assert "recovery pgd at η/σ = 5 reaches 0.350" in v["reasons"]
    assert any(r.startswith("attacker's best: 0.350 (recovery pgd at η/σ = 5)") for r in v["reasons"])


def test_strong_needs_the_certificate_to_confirm():
    at = CONTROL["certificate"]["curve"][1]["learnability"]
    confirmed = judge(section(0.2, certified=at - 0.05), CONTROL, CFG)  # exactly the gap
    assert confirmed["level"] == "strong"
    v = judge(section(0.2, certified=at - 0.049), CONTROL, CFG)
    assert v["level"] == "partial"
    assert v["reasons"][-2].startswith("certified learnability 0.401 is not 0.05 below the clean control's 0.450")
    assert v["reasons"][-1] == "strong needs the certificate to confirm the protection: partial"
    # it never lowers partial or weak
    assert judge(section(0.35, certified=at), CONTROL, CFG)["level"] == "partial"
    assert judge(section(0.45, certified=at + 0.1), CONTROL, CFG)["level"] == "weak"


@pytest.mark.parametrize("sec, control, why", [
    (section(0.2, certified="skip"), CONTROL, "certificate not computed"),
    (section(0.2), None, "no clean-control certificate to compare with"),
    (section(0.2), section(CLEAN, certified="skip"), "no clean-control certificate to compare with"),
    (section(0.2, certified=None), section(CLEAN, certified=None), "the certificate abstains at η/σ = 0.1 (N = 100)"),
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
    ("reference/defenses-jpeg-grayscale-n100", {"none": "none", "miue": "weak", "em": "weak", "random": "none"}),
    ("reference/defense-at8-n100", {"none": "none", "miue": "partial", "em": "partial", "random": "none"}),
    ("reference/miue-em-random-n100", {"none": "none", "miue": "partial", "em": "partial", "random": "none"}),
    ("baseline/digits-gate", {"none": "none", "random": "none", "ops": "weak"}),  # over 3 seeds: upper end 0.818
    # five seeds on the upper end: EM's spread (seed 3 at 0.317) makes it partial; random noise none over seeds
    ("reference/seeds-k5", {"none": "none", "miue": "strong", "em": "partial", "pue": "strong", "random": "none"}),
])
def test_defaults_on_the_stored_reports(report, levels):
    """The README's reading of the defaults: JPEG-10 leaves the ℓ∞ poisons weak, AT partial; the
    recovery attack (pgd at η/σ = 5) holds MI-UE and EM to partial; random noise is none."""
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
