"""certify check and certify.check: the CI gate comparing a report against a baseline."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import certify
from certify.cli import main
from certify.errors import UserError
from sample_reports import make_report


def _write(path, report):
    path.write_text(json.dumps(report))
    return path


def _first_certified(report, poison="miue"):
    return next(p for p in report["poisons"][poison]["certificate"]["curve"] if p["learnability"] is not None)


@pytest.fixture
def pair(tmp_path):
    base = make_report()
    return tmp_path, base, make_report()


def _run(tmp_path, base, rep, junit=None, **kw):
    """`certify check`'s exit code on two report dicts; its table printed (UserError raised as `certify.check`'s)."""
    result = certify.check(_write(tmp_path / "baseline.json", base), _write(tmp_path / "report.json", rep), **kw)
    if junit:
        result.write_junit(junit)
    print(result.text())
    return result.exit_code


def test_equal_reports_pass_and_print_a_table(pair, capsys):
    tmp_path, base, rep = pair
    assert _run(tmp_path, base, rep) == 0
    out = capsys.readouterr().out
    assert "(alpha 0.05, tolerance 0.02)" in out
    assert out.split("\npoison ")[1].split()[:8] == ["metric", "seeds", "baseline", "report", "delta", "p",
                                                     "test", "verdict"]
    assert "protected_accuracy" in out and "certified eta/sigma=0.1" in out
    assert "not judged" in out  # the clean control is shown, never judged
    assert "WEAKER" not in out


def test_weaker_protected_accuracy_fails(pair, capsys):
    tmp_path, base, rep = pair
    rep["poisons"]["miue"]["empirical"]["protected_accuracy"] += 0.05
    assert _run(tmp_path, base, rep) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("miue") and " protected_accuracy " in ln)
    assert "WEAKER" in line and "+0.0500" in line


def test_weaker_defended_accuracy_fails(pair):
    tmp_path, base, rep = pair
    rep["poisons"]["miue"]["empirical"]["defenses"]["jpeg"]["accuracy"] += 0.1
    assert _run(tmp_path, base, rep) == 1


def test_weaker_certificate_fails(pair, capsys):
    tmp_path, base, rep = pair
    _first_certified(rep)["learnability"] += 0.05
    assert _run(tmp_path, base, rep) == 1
    assert "WEAKER" in capsys.readouterr().out


def test_abstaining_in_the_report_fails(pair, capsys):
    tmp_path, base, rep = pair
    pt = _first_certified(rep)
    pt.update(k=None, learnability=None)
    assert _run(tmp_path, base, rep) == 1
    assert "ABSTAINS" in capsys.readouterr().out


def test_missing_poison_fails(tmp_path, capsys):
    base, rep = (make_report(poisons=("none", "miue", "em")) for _ in range(2))
    del rep["poisons"]["miue"]
    assert _run(tmp_path, base, rep) == 1
    assert "MISSING" in capsys.readouterr().out


def test_within_tolerance_passes_and_better_passes(pair):
    tmp_path, base, rep = pair
    rep["poisons"]["miue"]["empirical"]["protected_accuracy"] += 0.02  # exactly the tolerance
    _first_certified(rep)["learnability"] += 0.019
    rep["poisons"]["miue"]["empirical"]["peak_protected_accuracy"] -= 0.2  # stronger protection
    assert _run(tmp_path, base, rep) == 0
    assert _run(tmp_path, base, rep, tolerance=0.0) == 1


def test_control_is_never_judged(pair):
    tmp_path, base, rep = pair
    rep["poisons"]["none"]["empirical"]["protected_accuracy"] = 0.9
    _first_certified(rep, "none")["learnability"] = 0.99
    assert _run(tmp_path, base, rep) == 0
    del rep["poisons"]["none"]
    assert _run(tmp_path, base, rep) == 0


def test_different_sigma_is_not_comparable(pair):
    tmp_path, base, rep = pair
    rep["poisons"]["miue"]["certificate"]["sigma"] = 0.05
    with pytest.raises(UserError, match="certificates not comparable: .*sigma"):
        _run(tmp_path, base, rep)
    rep = make_report()
    rep["poisons"]["miue"]["certificate"]["surrogate_recipe"]["epochs"] = 99
    with pytest.raises(UserError, match="certificates not comparable: .*surrogate_recipe"):
        _run(tmp_path, base, rep)


def test_malformed_and_foreign_inputs(tmp_path):
    good = _write(tmp_path / "good.json", make_report())
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(UserError, match="bad.json: not valid JSON"):
        certify.check(good, bad)
    foreign = _write(tmp_path / "foreign.json", {"results": [1, 2, 3]})
    with pytest.raises(UserError, match="foreign.json"):
        certify.check(foreign, good)
    with pytest.raises(UserError, match="no such file"):
        certify.check(tmp_path / "absent.json", good)
    with pytest.raises(UserError, match="tolerance"):
        certify.check(good, good, tolerance=-0.1)


def test_junit_file_is_written_and_parseable(pair):
    tmp_path, base, rep = pair
    rep["poisons"]["miue"]["empirical"]["protected_accuracy"] += 0.05
    junit = tmp_path / "out" / "junit.xml"
    assert _run(tmp_path, base, rep, junit=junit) == 1
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert cases and all(c.get("classname", "").startswith("certify.") for c in cases)
    failed = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [("certify.miue", "protected_accuracy")]
    assert any(c.find("skipped") is not None for c in cases if c.get("classname") == "certify.none")
    assert root.find("testsuite").get("failures") == "1"


def test_junit_escapes_odd_poison_names(tmp_path):
    odd = 'a<b>&"c'
    base = make_report(poisons=("none", odd))
    rep = make_report(poisons=("none", odd))
    rep["poisons"][odd]["empirical"]["protected_accuracy"] += 0.1
    junit = tmp_path / "junit.xml"
    assert _run(tmp_path, base, rep, junit=junit) == 1
    names = {c.get("classname") for c in ET.parse(junit).getroot().iter("testcase")}
    assert f"certify.{odd}" in names


# ----------------------------------------------------------------------------- hostile input (issue 18)
# Reports built from the committed digits baseline, checked through the CLI as CI runs it.

COMMITTED = Path(__file__).resolve().parents[1] / "reports/baseline/digits-gate/report.json"


def _committed():
    return json.loads(COMMITTED.read_text())


def _cli(tmp_path, base, rep, capsys):
    """(exit code, stdout, stderr lines) of `certify check` on two documents (dicts, or raw JSON texts)."""
    paths = tmp_path / "baseline.json", tmp_path / "report.json"
    for path, doc in zip(paths, (base, rep)):
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    code = main(["check", *map(str, paths)])
    io = capsys.readouterr()
    return code, io.out, io.err.splitlines()


def _refusal(tmp_path, base, rep, capsys) -> str:
    """The single stderr line of an exit-2 refusal."""
    code, out, err = _cli(tmp_path, base, rep, capsys)
    assert (code, len(err)) == (2, 1), (code, err, out[-500:])
    assert err[0].startswith("certify: error: ")
    return err[0]


def _set(doc, path, value):
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


# Like with like: reports of different runs are refused (exit 2), naming the field and both values.
RUN_CHANGES = [
    (("dataset", "name"), "mnist"),
    (("dataset", "n_train"), 1437),
    (("dataset", "n_test"), 360),
    (("dataset", "shape"), [1, 28, 28]),
    (("dataset", "classes"), 9),
    (("model", "arch"), "resnet18"),
    (("model", "parameters"), 6331),
    (("config", "profile"), "reference"),
]


@pytest.mark.parametrize("path, value", RUN_CHANGES, ids=[".".join(path) for path, _ in RUN_CHANGES])
def test_different_runs_are_not_comparable(tmp_path, capsys, path, value):
    base, rep = _committed(), _committed()
    _set(rep, path, value)
    line = _refusal(tmp_path, base, rep, capsys)
    old = base
    for key in path:
        old = old[key]
    assert f"reports not comparable: {'.'.join(path)} is {old!r} in the baseline but {value!r} in the report" in line


@pytest.mark.parametrize("side", ["baseline", "report"])
def test_different_draw_counts_are_not_comparable(tmp_path, capsys, side):
    base, rep = _committed(), _committed()
    (base if side == "baseline" else rep)["poisons"]["ops"]["certificate"]["samples"] = 1000
    line = _refusal(tmp_path, base, rep, capsys)
    counts = (1000, 100) if side == "baseline" else (100, 1000)
    assert "certificates not comparable: poisons.ops.certificate.samples is %d in the baseline but %d in the report" \
        % counts in line


def test_different_test_sets_are_not_comparable(tmp_path, capsys):
    base, rep = _committed(), _committed()
    base["dataset"]["test_digest"] = "0123456789abcdef0123"
    rep["dataset"]["test_digest"] = "fedcba9876543210fedc"
    line = _refusal(tmp_path, base, rep, capsys)
    assert "dataset.test_digest is '0123456789abcdef0123' in the baseline but 'fedcba9876543210fedc' in the report" \
        in line


@pytest.mark.parametrize("digests, note", [
    (("0123456789abcdef0123", "0123456789abcdef0123"), False),
    (("0123456789abcdef0123", None), True),
    ((None, "0123456789abcdef0123"), True),
    ((None, None), True),
], ids=["both-equal", "baseline-only", "report-only", "neither"])
def test_test_set_digest_compared_when_both_reports_have_one(tmp_path, capsys, digests, note):
    docs = _committed(), _committed()
    for doc, digest in zip(docs, digests):
        doc["dataset"].pop("test_digest", None)  # the committed baseline has one; older reports do not
        if digest is not None:
            doc["dataset"]["test_digest"] = digest
    code, out, err = _cli(tmp_path, *docs, capsys)
    assert (code, err) == (0, [])
    header = out.split("\npoison ")[0]
    assert ("test-set digest not compared" in header) is note


def test_a_test_digest_must_be_a_string(tmp_path, capsys):
    base, rep = _committed(), _committed()
    rep["dataset"]["test_digest"] = 12
    assert "dataset.test_digest: must be string" in _refusal(tmp_path, base, rep, capsys)


# Empty comparisons never pass.
JUDGED = ("random", "ops")  # the committed baseline's judged poisons (besides the control `none`)


def _without(doc, names):
    for name in names:
        del doc["poisons"][name]
    return doc


@pytest.mark.parametrize("names", [JUDGED, ("none",) + JUDGED], ids=["control-only", "no-poison"])
def test_a_baseline_that_judges_nothing_is_an_error(tmp_path, capsys, names):
    base, rep = _without(_committed(), names), _committed()
    assert "baseline judges nothing" in _refusal(tmp_path, base, rep, capsys)


@pytest.mark.parametrize("names", [JUDGED, ("none",) + JUDGED], ids=["control-only", "no-poison"])
def test_a_report_that_judges_nothing_of_the_baseline_fails(tmp_path, capsys, names):
    base, rep = _committed(), _without(_committed(), names)
    rep["poisons"]["new-poison"] = base["poisons"]["ops"]  # new poisons are shown, never judged
    code, out, err = _cli(tmp_path, base, rep, capsys)
    assert code == 1 and len(err) == 1, (code, err)
    assert err[0].startswith("certify: check failed: ") and "random" in err[0] and "ops" in err[0]
    assert "MISSING" in out


# Reading hostile files: whatever is wrong inside is one line (exit 2), never a traceback.
HUGE = 10 ** 400  # a JSON integer no float can hold


def _cert(doc):
    return doc["poisons"]["ops"]["certificate"]


@pytest.mark.parametrize("mutate, says", [
    (lambda d: d["poisons"]["ops"].update(certificate=5), "poisons.ops.certificate: must be object"),
    (lambda d: _cert(d).update(curve=[1, 2]), "poisons.ops.certificate.curve[0]: must be object"),
    (lambda d: _cert(d).update(sigma="0.02"), "poisons.ops.certificate.sigma: must be number"),
    (lambda d: _cert(d).update(sigma=HUGE), "poisons.ops.certificate.sigma: must be a finite number"),
    (lambda d: _cert(d)["curve"][0].update(eta_over_sigma=HUGE), "curve[0].eta_over_sigma: must be a finite"),
    (lambda d: _cert(d)["surrogate_recipe"]["levels"].__setitem__(0, HUGE), "levels[0]: must be a finite"),
    (lambda d: _cert(d).update(samples=HUGE), "poisons.ops.certificate.samples: must be a finite"),
    (lambda d: d["dataset"].update(n_test=-HUGE), "dataset.n_test: must be a finite"),
    (lambda d: d["config"].update(profile=["quick"]), "config.profile: must be string"),
], ids=["certificate-5", "curve-of-ints", "string-sigma", "huge-sigma", "huge-eta", "huge-level", "huge-samples",
        "huge-negative-n_test", "profile-list"])
@pytest.mark.parametrize("side", ["baseline", "report"])
def test_hostile_values_are_one_line_errors(tmp_path, capsys, mutate, says, side):
    base, rep = _committed(), _committed()
    mutate(base if side == "baseline" else rep)
    line = _refusal(tmp_path, base, rep, capsys)
    assert f"{side}.json: " in line and says in line


def _one_side(side, text):
    """(baseline, report): the committed report on both sides, `text` on `side`."""
    good = json.dumps(_committed())
    return (text, good) if side == "baseline" else (good, text)


@pytest.mark.parametrize("side", ["baseline", "report"])
def test_an_integer_too_long_to_read_is_a_one_line_error(tmp_path, capsys, side):
    text = json.dumps(_committed()).replace('"samples": 100', '"samples": ' + "9" * 5000, 1)
    line = _refusal(tmp_path, *_one_side(side, text), capsys)
    assert f"{side}.json: not valid JSON (an integer longer than" in line


@pytest.mark.parametrize("depth", [40, 500, 900, 5000])
@pytest.mark.parametrize("side", ["baseline", "report"])
def test_deep_nesting_inside_a_compared_section_is_a_one_line_error(tmp_path, capsys, side, depth):
    text = json.dumps(_committed()).replace('"draws_per_level": 1', '"draws_per_level": ' + "[" * depth + "]" * depth)
    line = _refusal(tmp_path, *_one_side(side, text), capsys)
    assert f"{side}.json: " in line and "nested" in line


def _leaves(doc, path=()):
    """Every path into a JSON document (lists: their first item only)."""
    yield path
    items = doc.items() if isinstance(doc, dict) else enumerate(doc[:1]) if isinstance(doc, list) else ()
    for key, value in items:
        yield from _leaves(value, path + (key,))


def test_any_hostile_value_in_a_poison_or_the_run_sections_is_a_verdict_or_one_line(tmp_path, capsys):
    """Every place in one poison's section and in dataset/model/config.profile, in the report."""
    base = _committed()
    places = [("poisons", "ops") + p for p in _leaves(base["poisons"]["ops"]) if p]
    places += [(s,) + p for s in ("dataset", "model") for p in _leaves(base[s])] + [("config", "profile")]
    for place in places:
        for value in (5, [1, 2], HUGE, "x", None):
            rep = _committed()
            _set(rep, place, value)
            code, _, err = _cli(tmp_path, base, rep, capsys)
            assert code in (0, 1, 2) and len(err) <= 1, (place, value, code, err)
