"""certify check with replicate seeds: a metric is WEAKER only when a one-sided test says the report's
accuracy is higher (p < alpha) and the difference of means exceeds the tolerance; the tests' p-values,
the table's and JUnit file's columns, --alpha, and malformed `replicates` as one-line errors."""

import json
import math
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportions_ztest

from certify.cli import main
from certify.gate import OK, WEAKER, judge_accuracy, permutation_p, two_proportion_p, welch_p
from sample_reports import add_seeds, make_report, summarize as summarize_seeds

ALPHA, TOLERANCE, N = 0.05, 0.02, 1000  # make_report's test set has 1000 images


def _judge(base, rep, n=N, alpha=ALPHA, tolerance=TOLERANCE):
    return judge_accuracy(list(base), list(rep), n, n, alpha, tolerance)


def _draws(rng, mean, k, sd=0.03):
    """k per-seed accuracies on a 1000-image test set (multiples of 0.001)."""
    return np.round(rng.normal(mean, sd, k), 3).clip(0, 1).tolist()


# ----------------------------------------------------------------------------- the tests' p-values

def test_welch_p_is_scipys_one_sided_welch_t():
    base, rep = [0.2, 0.209, 0.192], [0.24, 0.25, 0.262, 0.233]
    expected = stats.ttest_ind(rep, base, equal_var=False, alternative="greater").pvalue
    verdict, p, test = _judge(base, rep)
    assert (test, p) == ("welch-t", pytest.approx(expected, rel=1e-12))
    assert welch_p(base, rep) == pytest.approx(expected, rel=1e-12)
    assert verdict == WEAKER  # p ~ 0.002 and the means differ by 0.047


@pytest.mark.filterwarnings("ignore:Precision loss")  # scipy's, when the test calls it directly
def test_welch_with_one_constant_side_is_defined_and_quiet():
    """Seeds agreeing exactly on one side (e.g. a poison at chance level): Welch's t stays defined, and
    the gate prints no scipy warning about it."""
    base, rep = [0.1, 0.1, 0.1], [0.2, 0.25, 0.22]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verdict, p, test = _judge(base, rep)
    expected = stats.ttest_ind(rep, base, equal_var=False, alternative="greater").pvalue
    assert (verdict, test) == (WEAKER, "welch-t") and p == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("base, rep", [
    ([0.2, 0.2], [0.3, 0.3]),
    ([0.2] * 3, [0.3] * 3),
    ([0.2] * 2, [0.3] * 4),
    ([0.2] * 4, [0.3] * 2),
    ([0.2] * 3, [0.2] * 3),
    ([0.3] * 3, [0.2] * 3),
], ids=["2v2", "3v3", "2v4", "4v2", "equal", "report-lower"])
def test_constant_sides_use_the_exact_permutation_test(base, rep):
    """Welch's t is undefined there (scipy answers p = 0 for any difference); the fallback equals
    scipy's exact permutation test on the difference of means."""
    exact = stats.permutation_test((rep, base), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                                   permutation_type="independent", alternative="greater", n_resamples=np.inf)
    verdict, p, test = _judge(base, rep)
    assert test == "permutation" and not math.isnan(p)
    assert p == pytest.approx(exact.pvalue, rel=1e-12) == permutation_p(base, rep)
    assert verdict == OK  # p >= 1/C(6, 3) = 0.05 here: too few seeds to show anything at alpha 0.05


def test_constant_sides_with_enough_seeds_can_be_weaker():
    verdict, p, test = _judge([0.2] * 5, [0.3] * 5)
    assert (verdict, test) == (WEAKER, "permutation") and p == pytest.approx(1 / math.comb(10, 5))


@pytest.mark.parametrize("base, rep, weaker", [
    (0.200, 0.317, True),
    (0.180, 0.193, False),
    (0.21, 0.23, False),   # the tolerance on the nose: p ~ 0.14 anyway
    (0.21, 0.26, True),
], ids=["0.200-0.317", "0.180-0.193", "0.21-0.23", "0.21-0.26"])
def test_one_replicate_uses_the_two_proportion_test(base, rep, weaker):
    expected = proportions_ztest([round(rep * N), round(base * N)], [N, N], alternative="larger")[1]
    verdict, p, test = _judge([base], [rep])
    assert (test, p) == ("two-proportion", pytest.approx(expected, rel=1e-12))
    assert (verdict == WEAKER) is weaker


def test_one_replicate_on_either_side_uses_the_two_proportion_test_on_the_means():
    many = [0.2, 0.21, 0.19]  # mean 0.2
    expected = proportions_ztest([317, 200], [N, N], alternative="larger")[1]
    for base, rep in (([0.2], [0.317]), (many, [0.317]), ([0.2], [0.31, 0.317, 0.324])):
        verdict, p, test = _judge(base, rep)
        assert (verdict, test, p) == (WEAKER, "two-proportion", pytest.approx(expected, rel=1e-9)), (base, rep)


@pytest.mark.parametrize("base, rep, n", [(0.0, 0.0, N), (1.0, 1.0, N), (0.0, 0.0, 0), (0.5, 0.6, 0)],
                         ids=["both-0", "both-n", "no-test-images", "no-test-images-different"])
def test_degenerate_two_proportion_cases_are_no_evidence_not_nan(base, rep, n):
    verdict, p, test = _judge([base], [rep], n=n)
    assert (verdict, p, test) == (OK, 1.0, "two-proportion")


def test_two_proportion_at_opposite_edges_is_finite():
    p = two_proportion_p(0.0, 1.0, 100, 100)
    assert p == pytest.approx(proportions_ztest([100, 0], [100, 100], alternative="larger")[1]) and p < 1e-6


# ----------------------------------------------------------------------------- synthetic seeds

def test_noise_alone_passes():
    """3 vs 3 seeds from the same N(0.2, 0.03^2): not weaker, and rarely so over many draws."""
    rng = np.random.default_rng(7)
    assert _judge(_draws(rng, 0.2, 3), _draws(rng, 0.2, 3))[0] == OK
    false_alarms = sum(_judge(_draws(rng, 0.2, 3), _draws(rng, 0.2, 3))[0] == WEAKER for _ in range(400))
    assert false_alarms / 400 <= ALPHA


def test_a_real_effect_fails():
    """The same seeds' values shifted by +0.15: weaker, and nearly always over many draws."""
    rng = np.random.default_rng(7)
    base, rep = _draws(rng, 0.2, 3), _draws(rng, 0.2, 3)
    verdict, p, test = _judge(base, [v + 0.15 for v in rep])
    assert (verdict, test) == (WEAKER, "welch-t") and p < 0.001
    hits = sum(_judge(_draws(rng, 0.2, 3), _draws(rng, 0.35, 3))[0] == WEAKER for _ in range(200))
    assert hits / 200 >= 0.95


def test_a_real_effect_within_the_tolerance_passes():
    """+0.015 with little noise: significant (p < alpha) but within the 0.02 tolerance."""
    rng = np.random.default_rng(3)
    base, rep = _draws(rng, 0.2, 3, sd=0.002), _draws(rng, 0.215, 3, sd=0.002)
    verdict, p, _ = _judge(base, rep)
    assert p < ALPHA and 0 < np.mean(rep) - np.mean(base) < TOLERANCE
    assert verdict == OK
    assert _judge(base, rep, tolerance=0.0)[0] == WEAKER


# ----------------------------------------------------------------------------- through `certify check`

def with_replicates(report, protected, poison="miue", seed=0):
    """`report` as a run of len(protected) replicate seeds (seed, seed+1, ...; every field of the
    contract, as tests/test_report.py makes them), with `poison`'s protected accuracies `protected`."""
    report["seed"] = seed
    add_seeds(report, len(protected))
    sec = report["poisons"][poison]
    for rep, v in zip(sec["replicates"], protected):
        rep["protected_accuracy"] = v
    emp = sec["empirical"]
    emp["protected_accuracy"], emp["protected_interval"] = summarize_seeds(protected, report["dataset"]["n_test"])
    return report


def _cli(tmp_path, capsys, base, rep, *options):
    paths = tmp_path / "baseline.json", tmp_path / "report.json"
    for path, doc in zip(paths, (base, rep)):
        path.write_text(json.dumps(doc))
    code = main(["check", *map(str, paths), *options])
    io = capsys.readouterr()
    return code, io.out, io.err.splitlines()


def _row(out, metric="protected_accuracy", poison="miue"):
    return next(ln for ln in out.splitlines() if ln.startswith(poison) and f" {metric} " in ln)


def _holm_smallest(p: float, out: str) -> float:
    """Holm's adjustment of the smallest p of the check's judged accuracies (the others are 0.5 here):
    times the number of them."""
    family = [ln for ln in out.splitlines() if ln.startswith("miue ") and
              any(f" {t} " in ln for t in ("welch-t", "permutation", "two-proportion"))]
    return min(1.0, p * len(family))


def test_the_table_shows_seeds_means_p_and_test(tmp_path, capsys):
    rng = np.random.default_rng(7)
    base_values, rep_values = _draws(rng, 0.2, 3), [v + 0.15 for v in _draws(rng, 0.2, 3)]
    base, rep = with_replicates(make_report(), base_values), with_replicates(make_report(), rep_values)
    code, out, err = _cli(tmp_path, capsys, base, rep)
    assert (code, err) == (1, [])
    header = out.splitlines()[:4]
    assert any("alpha 0.05" in ln and "tolerance 0.02" in ln for ln in header)
    assert out.split("\npoison ")[1].split()[:8] == ["metric", "seeds", "baseline", "report", "delta", "p",
                                                     "test", "verdict"]
    p = stats.ttest_ind(rep_values, base_values, equal_var=False, alternative="greater").pvalue
    cells = _row(out).split()
    assert cells[2:5] == ["3", "vs", "3"]
    assert cells[5:8] == [f"{np.mean(base_values):.4f}", f"{np.mean(rep_values):.4f}",
                          f"{np.mean(rep_values) - np.mean(base_values):+.4f}"]
    assert cells[8:] == [f"{_holm_smallest(p, out):.3g}", "welch-t", "WEAKER"]
    # the other accuracies: the same per-seed values on both sides
    assert _row(out, "peak_protected_accuracy").split()[-3:] == ["1", "welch-t", "ok"]  # 0.5, Holm-adjusted
    assert _row(out, "certified eta/sigma=0.1").split()[-3:] == ["-", "bound", "ok"]


def test_the_junit_file_shows_seeds_p_and_test(tmp_path, capsys):
    base = with_replicates(make_report(), [0.2, 0.209, 0.192])
    rep = with_replicates(make_report(), [0.35, 0.359, 0.342])
    junit = tmp_path / "junit.xml"
    code, out, _ = _cli(tmp_path, capsys, base, rep, "--junit", str(junit))
    assert code == 1
    cases = {(c.get("classname"), c.get("name")): c for c in ET.parse(junit).getroot().iter("testcase")}
    failure = cases[("certify.miue", "protected_accuracy")].find("failure")
    p = stats.ttest_ind([0.35, 0.359, 0.342], [0.2, 0.209, 0.192], equal_var=False, alternative="greater").pvalue
    message = failure.get("message")
    assert message.startswith("WEAKER: seeds 3 vs 3, baseline 0.2003, report 0.3503, delta +0.1500")
    assert f"p {_holm_smallest(p, out):.3g}, test welch-t, alpha 0.05, tolerance 0.02" in message
    passing = cases[("certify.miue", "peak_protected_accuracy")]
    assert passing.find("failure") is None
    assert "test welch-t" in passing.find("system-out").text and "verdict ok" in passing.find("system-out").text
    bound = cases[("certify.miue", "certified eta/sigma=0.1")].find("system-out").text
    assert "p -, test bound" in bound


def test_the_checks_p_values_are_holm_adjusted_together():
    """Two metrics each at p just under alpha fail alone; together, adjusted, neither does."""
    from statsmodels.stats.multitest import multipletests

    from certify.gate import compare

    base = with_replicates(make_report(), [0.20, 0.21, 0.22])
    rep = with_replicates(make_report(), [0.23, 0.25, 0.26])
    for doc, shift in ((base, 0.0), (rep, 0.03)):
        for r, v in zip(doc["poisons"]["miue"]["replicates"], [0.20, 0.22, 0.21]):
            r["peak_protected_accuracy"] = v + shift
    rows = [r for r in compare(base, rep, 0.02, 0.05) if r.poison == "miue" and r.test == "welch-t"]
    raw = [judge_accuracy(*_values(base, rep, r.metric), 1000, 1000, 0.05, 0.02)[1] for r in rows]
    assert [r.p for r in rows] == pytest.approx(list(multipletests(raw, alpha=0.05, method="holm")[1]))
    assert sum(p < 0.05 for p in raw) >= 1 and all(r.verdict == OK for r in rows if r.p >= 0.05)


def _values(base, rep, metric):
    from certify.gate import _accuracy_metrics

    return _accuracy_metrics(base["poisons"]["miue"])[metric], _accuracy_metrics(rep["poisons"]["miue"])[metric]


@pytest.mark.parametrize("k_base, k_report", [(3, 1), (1, 3), (3, 5)])
def test_different_numbers_of_seeds_are_compared(tmp_path, capsys, k_base, k_report):
    def report(k, shift):
        values = [round(0.21 + shift + 0.004 * (i - 1), 3) for i in range(k)]
        return with_replicates(make_report(), values) if k > 1 else \
            make_report()  # K = 1: an older report, its summary the one replicate (0.21)
    test = "welch-t" if min(k_base, k_report) > 1 else "two-proportion"
    code, out, err = _cli(tmp_path, capsys, report(k_base, 0), report(k_report, 0))
    assert (code, err) == (0, [])
    cells = _row(out).split()
    assert cells[2:5] == [str(k_base), "vs", str(k_report)] and cells[-2:] == [test, "ok"]
    if k_report > 1:  # a real effect in the report fails, whatever the baseline's K
        code, out, err = _cli(tmp_path, capsys, report(k_base, 0), report(k_report, 0.1))
        assert (code, err) == (1, []) and _row(out).split()[-2:] == [test, "WEAKER"]


def test_other_poison_parameters_and_budgets_are_compared(tmp_path, capsys):
    base, rep = make_report(), make_report()
    rep["poisons"]["miue"]["budget"].update(epsilon=16 / 255, measured=16 / 255)
    base["poisons"]["miue"]["parameters"], rep["poisons"]["miue"]["parameters"] = {"steps": 10}, {"steps": 20}
    rep["config"]["eps"] = 16
    rep["command"] = "certify run --poison miue --eps 16/255 --samples 200 --sigma 0.02 --seed 0"
    code, out, err = _cli(tmp_path, capsys, base, rep)
    assert (code, err) == (0, []) and "passed" in out


def test_certificates_over_other_numbers_of_replicates_are_compared(tmp_path, capsys):
    base, rep = make_report(), with_replicates(make_report(), [0.2, 0.21, 0.22])
    rep["poisons"]["miue"]["certificate"].update(replicates=3, replicate_alpha=0.01 / 3)
    code, out, err = _cli(tmp_path, capsys, base, rep)
    assert (code, err) == (0, [])
    assert _row(out, "certified eta/sigma=0.1").split()[3:6] == ["1", "vs", "3"]
    rep["poisons"]["miue"]["certificate"]["alpha"] = 0.05  # the family-wise level still has to match
    code, out, err = _cli(tmp_path, capsys, base, rep)
    assert code == 2 and "poisons.miue.certificate.alpha" in err[0]


def test_alpha_sets_the_level(tmp_path, capsys):
    base, rep = make_report(), make_report()
    rep["poisons"]["miue"]["empirical"]["protected_accuracy"] += 0.05  # p ~ 0.004
    assert _cli(tmp_path, capsys, base, rep)[0] == 1
    code, out, _ = _cli(tmp_path, capsys, base, rep, "--alpha", "0.001")
    assert code == 0 and "alpha 0.001" in out and _row(out).split()[-1] == "ok"


@pytest.mark.parametrize("value", ["0", "1", "-1", "nan", "inf", "x", "1.5"])
def test_bad_alpha_is_one_line(tmp_path, capsys, value):
    doc = make_report()
    code, out, err = _cli(tmp_path, capsys, doc, doc, "--alpha", value)
    assert (code, len(err)) == (2, 1), (code, err)
    assert err[0].startswith("certify: error: ") and "--alpha" in err[0] and value in err[0]


# ----------------------------------------------------------------------------- malformed replicates

def _replicated():
    return with_replicates(make_report(), [0.2, 0.21, 0.22])


def _reps(doc):
    return doc["poisons"]["miue"]["replicates"]


def _emp(doc):
    return doc["poisons"]["miue"]["empirical"]


MALFORMED = [
    ("seeds-without-an-interval", lambda d: _emp(d).pop("clean_interval"),
     "poisons.miue.empirical.clean_interval: missing"),
    ("defense-without-an-interval", lambda d: _emp(d)["defenses"]["jpeg"].pop("interval"),
     "poisons.miue.empirical.defenses.jpeg.interval: missing"),
    ("replicates-without-seeds", lambda d: d.pop("seeds"), "has replicate-seed fields"),
    ("not-a-list", lambda d: d["poisons"]["miue"].update(replicates={"seed": 0}),
     "poisons.miue.replicates: must be array"),
    ("empty", lambda d: d["poisons"]["miue"].update(replicates=[]),
     "poisons.miue.replicates: must hold at least 1 item(s)"),
    ("item-not-object", lambda d: _reps(d).__setitem__(1, 0.21), "poisons.miue.replicates[1]: must be object"),
    ("seed-string", lambda d: _reps(d)[1].update(seed="1"), "poisons.miue.replicates[1].seed: must be integer"),
    ("seed-fraction", lambda d: _reps(d)[1].update(seed=1.5), "poisons.miue.replicates[1].seed: must be integer"),
    ("seed-missing", lambda d: _reps(d)[2].pop("seed"), "poisons.miue.replicates[2].seed: missing"),
    ("seed-repeated", lambda d: _reps(d)[2].update(seed=0),
     "poisons.miue.replicates[2].seed: repeats seed 0 of replicates[0]"),
    ("accuracy-above-1", lambda d: _reps(d)[0].update(protected_accuracy=1.5),
     "poisons.miue.replicates[0].protected_accuracy: must be <= 1"),
    ("accuracy-negative", lambda d: _reps(d)[1].update(peak_protected_accuracy=-0.1),
     "poisons.miue.replicates[1].peak_protected_accuracy: must be >= 0"),
    ("clean-above-1", lambda d: _reps(d)[1].update(clean_accuracy=2),
     "poisons.miue.replicates[1].clean_accuracy: must be <= 1"),
    ("defense-above-1", lambda d: _reps(d)[2]["defenses"].update(jpeg=1.01),
     "poisons.miue.replicates[2].defenses.jpeg: must be <= 1"),
    ("defense-peak-string", lambda d: _reps(d)[2]["defenses_peak"].update(jpeg="0.3"),
     "poisons.miue.replicates[2].defenses_peak.jpeg: must be number"),
    ("certified-above-1", lambda d: _reps(d)[0].update(certified={"0.1": 1.2}),
     "poisons.miue.replicates[0].certified['0.1']: must be <= 1"),
    ("recovery-negative", lambda d: _reps(d)[0].update(recovery={"pgd": -0.5}),
     "poisons.miue.replicates[0].recovery.pgd: must be >= 0"),
    ("interval-of-one", lambda d: _emp(d).update(protected_interval=[0.2]),
     "poisons.miue.empirical.protected_interval: must hold at least 2 item(s)"),
    ("interval-above-1", lambda d: _emp(d).update(protected_interval=[0.2, 1.2]),
     "poisons.miue.empirical.protected_interval[1]: must be <= 1"),
    ("interval-method", lambda d: _emp(d).update(interval_method="bootstrap"),
     "poisons.miue.empirical.interval_method: must be one of 'clopper-pearson', 'student-t'"),
    ("empirical-seeds-0", lambda d: _emp(d).update(seeds=0), "poisons.miue.empirical.seeds: must be >= 1"),
    ("top-seeds-repeated", lambda d: d.update(seeds=[0, 0, 1]), "seeds: must not repeat a value"),
    ("certificate-replicates", lambda d: d["poisons"]["miue"]["certificate"].update(replicates=0),
     "poisons.miue.certificate.replicates: must be >= 1"),
]


@pytest.mark.parametrize("mutate, says", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("command", ["check", "report"])
def test_malformed_replicates_are_one_line_naming_the_field(tmp_path, capsys, mutate, says, command):
    bad = _replicated()
    mutate(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_replicated()))
    code = main(["check", str(good), str(path)] if command == "check" else ["report", str(path)])
    err = capsys.readouterr().err.splitlines()
    assert (code, len(err)) == (2, 1), (code, err)
    assert err[0].startswith(f"certify: error: {path}: ") and says in err[0], err[0]


def test_a_report_with_replicates_is_valid_and_renders(tmp_path, capsys):
    doc = _replicated()
    doc["poisons"]["miue"]["empirical"]["defenses"]["jpeg"].update(interval=[0.3, 0.32], peak_interval=[0.32, 0.34])
    doc["poisons"]["miue"]["recovery"]["pgd"].update(best_accuracy=0.25, best_interval=[0.24, 0.26])
    doc["poisons"]["miue"]["certificate"].update(replicates=3, replicate_alpha=0.01 / 3)
    _reps(doc)[0].update(certified={"0.1": 0.3, "1": None}, recovery={"pgd": 0.25})
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    assert main(["report", str(path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "report.md").is_file()


def test_json_check_prints_every_row_the_result_and_the_test(tmp_path, capsys):
    base = with_replicates(make_report(), [0.2, 0.209, 0.192])
    rep = with_replicates(make_report(), [0.35, 0.359, 0.342])
    paths = tmp_path / "baseline.json", tmp_path / "report.json"
    for path, doc in zip(paths, (base, rep)):
        path.write_text(json.dumps(doc))
    code = main(["--json", "check", *map(str, paths)])
    out = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON document
    assert code == 1 and out["result"] == "failed" and out["alpha"] == 0.05 and out["tolerance"] == 0.02
    row = next(r for r in out["rows"] if r["poison"] == "miue" and r["metric"] == "protected_accuracy")
    assert row["verdict"] == "WEAKER" and row["test"] == "welch-t" and row["seeds"] == [3, 3]
    assert row["delta"] == pytest.approx(0.15) and 0 < row["p"] < 0.05
    assert {r["test"] for r in out["rows"]} >= {"welch-t", "bound"}
    assert main(["--json", "check", str(paths[0]), str(paths[0])]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "passed"
