"""certify.gate.check: the CI gate comparing a report against a baseline."""

import json
import xml.etree.ElementTree as ET

import pytest

from certify.errors import UserError
from certify.gate import check
from test_report import make_report


def _write(path, report):
    path.write_text(json.dumps(report))
    return path


def _first_certified(report, poison="miue"):
    return next(p for p in report["poisons"][poison]["certificate"]["curve"] if p["learnability"] is not None)


@pytest.fixture
def pair(tmp_path):
    base = make_report()
    return tmp_path, base, make_report()


def _run(tmp_path, base, rep, **kw):
    return check(_write(tmp_path / "baseline.json", base), _write(tmp_path / "report.json", rep), **kw)


def test_equal_reports_pass_and_print_a_table(pair, capsys):
    tmp_path, base, rep = pair
    assert _run(tmp_path, base, rep) == 0
    out = capsys.readouterr().out
    for col in ("poison", "metric", "baseline", "report", "delta", "verdict"):
        assert col in out
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


def test_missing_poison_fails(pair, capsys):
    tmp_path, base, rep = pair
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
        check(good, bad)
    foreign = _write(tmp_path / "foreign.json", {"results": [1, 2, 3]})
    with pytest.raises(UserError, match="foreign.json"):
        check(foreign, good)
    with pytest.raises(UserError, match="no such file"):
        check(tmp_path / "absent.json", good)
    with pytest.raises(UserError, match="tolerance"):
        check(good, good, tolerance=-0.1)


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
