"""The Python API (`import certify`): the same report as the CLI, read-only views, check answers, and
bad input as certify.UserError naming the option."""
import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import certify
from certify.cli import main
from sample_reports import make_report

ROOT = Path(__file__).resolve().parents[1]
FAST_YAML = "train:\n  epochs: 3\nsurrogate:\n  epochs: 2\nsmoothing:\n  chunk: 10\n  sigma_draws: 10\n"
# what differs between two runs of the same options: when, how long, the command line and --out
NOT_NUMBERS = ("created", "command", "timings", "execution")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    (tmp / "fast.yaml").write_text(FAST_YAML)
    options = {"poisons": ["random"], "dataset": "digits", "samples": 40, "executor": "serial",
               "skip": ["scores", "recovery"], "config": str(tmp / "fast.yaml"), "cache_dir": str(tmp / "cache")}
    return tmp, options


@pytest.fixture(scope="module")
def api_report(world):
    tmp, options = world
    return certify.run(out=str(tmp / "api"), **options)


def _numbers(doc: dict) -> dict:
    doc = {k: v for k, v in doc.items() if k not in NOT_NUMBERS}
    doc["config"] = {k: v for k, v in doc["config"].items() if k != "out"}
    return doc


def test_import_is_cheap():
    code = "import sys, certify; print(sorted(m for m in ('torch', 'ray', 'numpy', 'yaml') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
    assert certify.plan.__module__ == "certify.api" and callable(certify.audit)  # not the submodules
    assert set(certify.__all__) == {"run", "audit", "plan", "check", "Report", "Plan", "CheckResult", "UserError"}


def test_run_returns_the_report_the_cli_writes(world, api_report, capsys):
    tmp, options = world
    assert api_report.path == tmp / "api" / "report.json"
    on_disk = json.loads(api_report.path.read_text())
    assert api_report.to_dict() == on_disk
    assert on_disk["command"].startswith("certify.run(")
    args = ["--quiet", "run", "--poison", "random", "--dataset", "digits", "--samples", "40", "--executor", "serial",
            "--skip", "scores,recovery", "--config", options["config"], "--cache-dir", options["cache_dir"],
            "--out", str(tmp / "cli")]
    capsys.readouterr()
    assert main(args) == 0
    cli = json.loads((tmp / "cli" / "report.json").read_text())
    assert _numbers(api_report.to_dict()) == _numbers(cli)
    assert set(cli["poisons"]) == {"none", "random"}


def test_views_read_the_report_as_it_is(api_report):
    doc = api_report.to_dict()
    rnd, sec = api_report.poisons["random"], doc["poisons"]["random"]
    assert list(api_report.poisons) == ["none", "random"]
    assert rnd.clean_accuracy == sec["empirical"]["clean_accuracy"]
    assert rnd.protected_accuracy == sec["empirical"]["protected_accuracy"]
    assert rnd.protected_interval == sec["empirical"]["protected_interval"]
    assert rnd.defenses == sec["empirical"]["defenses"] and set(rnd.defenses) == {"jpeg", "jpeg50", "grayscale"}
    cert = rnd.certificate
    assert (cert.sigma, cert.q, cert.alpha, cert.samples) == (sec["certificate"]["sigma"], 0.9, 0.01, 40)
    assert cert.curve == sec["certificate"]["curve"]
    first = cert.curve[0]
    assert cert.learnability(first["eta_over_sigma"]) == first["learnability"]
    assert rnd.scores is None and rnd.recovery is None  # skipped
    assert rnd.replicates == sec["replicates"] and rnd.victims is None
    verdict = api_report.verdict("random")
    assert verdict.level == sec["verdict"]["level"] and verdict.reasons == sec["verdict"]["reasons"]
    assert api_report.seeds == [0]
    # read-only: what a view hands out is a copy, and its attributes cannot be set
    rnd.defenses["jpeg"]["accuracy"] = 2.0
    cert.curve[0]["learnability"] = 2.0
    assert api_report.to_dict() == doc
    for attribute in ("protected_accuracy", "name"):
        with pytest.raises(AttributeError):
            setattr(rnd, attribute, 0.0)
    with pytest.raises(TypeError):
        api_report.poisons["x"] = rnd
    with pytest.raises(KeyError):
        api_report.verdict("nosuch")
    # a plain dict per poison for a notebook
    rows = {row["poison"]: row for row in api_report.table()}
    assert rows["random"]["verdict"] == verdict.level
    assert rows["random"]["protected_accuracy"] == rnd.protected_accuracy
    best = max(rnd.defenses, key=lambda d: rnd.defenses[d]["accuracy"])
    assert (rows["random"]["best_defense"], rows["random"]["defended_accuracy"]) == (best, rnd.defenses[best]["accuracy"])
    assert rows["random"]["certified"] == {str(p["eta_over_sigma"]): p["learnability"] for p in cert.curve}
    json.dumps(api_report.table())  # plain values only


def test_load_again_and_check_against_itself(api_report):
    again = certify.Report.load(api_report.path.parent)  # the directory, or its report.json
    assert again.to_dict() == api_report.to_dict() and again.path == api_report.path
    result = certify.check(api_report, str(again.path))
    assert result.passed and result.exit_code == 0 and result.problem is None
    judged = [r for r in result.rows if r["poison"] == "random"]
    assert judged and all(r["verdict"] == "ok" for r in judged)
    assert {r["verdict"] for r in result.rows if r["poison"] == "none"} == {"not judged"}


def test_check_answers_in_python(tmp_path):
    base, rep = make_report(), make_report()
    rep["poisons"]["miue"]["empirical"]["protected_accuracy"] += 0.05
    paths = tmp_path / "base.json", tmp_path / "rep.json"
    for p, doc in zip(paths, (base, rep)):
        p.write_text(json.dumps(doc))
    result = certify.check(*paths)
    assert not result.passed and result.exit_code == 1
    assert [(r["poison"], r["metric"]) for r in result.failures] == [("miue", "protected_accuracy")]
    assert result.failures[0]["verdict"] == "WEAKER" and result.failures[0]["delta"] == pytest.approx(0.05)
    assert certify.check(*paths, tolerance=0.1).passed
    assert result.to_dict()["result"] == "failed" and "FAILED: 1 metric(s)" in result.text()
    # a report holding nothing the baseline judges fails, and says why
    only_control = make_report(poisons=("none",))
    paths[1].write_text(json.dumps(only_control))
    empty = certify.check(*paths)
    assert not empty.passed and empty.exit_code == 1 and "judges nothing" in empty.problem
    assert [r["verdict"] for r in empty.failures] == ["MISSING"]


def test_check_format_github_annotates_each_failing_metric(tmp_path, capsys):
    base, rep = make_report(), make_report()
    rep["poisons"]["miue"]["empirical"]["protected_accuracy"] += 0.05
    del rep["poisons"]["miue"]["empirical"]["defenses"]["jpeg"]
    paths = tmp_path / "base.json", tmp_path / "rep.json"
    for p, doc in zip(paths, (base, rep)):
        p.write_text(json.dumps(doc))
    assert main(["check", *map(str, paths), "--format", "github"]) == 1
    out = capsys.readouterr().out
    errors = [ln for ln in out.splitlines() if ln.startswith("::error ")]
    assert errors[0].startswith("::error title=certify check%3A miue protected_accuracy::WEAKER: miue / "
                                "protected_accuracy (seeds 1 vs 1, baseline ")
    assert any("title=certify check%3A miue defense jpeg%3A accuracy::MISSING" in ln for ln in errors)
    assert len(errors) == len(certify.check(*paths).failures) == 3  # jpeg's accuracy and peak accuracy missing
    assert "poison" in out and "FAILED" in out  # the table as ever
    assert main(["check", str(paths[0]), str(paths[0]), "--format", "github"]) == 0
    assert "::error" not in capsys.readouterr().out


def test_plan_returns_the_plan_it_wrote(world, capsys):
    tmp, options = world
    settings = {k: v for k, v in options.items() if k not in ("poisons", "skip")}
    plan = certify.plan("random", ["4/255", "8/255"], target_accuracy=1.0, out=str(tmp / "plan"), **settings)
    assert "plan for random at linf budgets 4/255, 8/255" in capsys.readouterr().err  # progress, as the CLI's
    doc = json.loads((tmp / "plan" / "plan.json").read_text())
    assert plan.to_dict() == doc and plan.path == tmp / "plan" / "plan.json"
    assert plan.budgets == ["4/255", "8/255"] and plan.rows == doc["budgets"]
    assert plan.recommended == "4/255"  # every budget meets an accuracy target of 1
    assert certify.Plan.load(tmp / "plan").to_dict() == doc


def test_the_tour_runs(world, tmp_path, capsys):
    _, options = world
    spec = importlib.util.spec_from_file_location("api_tour", ROOT / "examples" / "api_tour.py")
    tour = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tour)
    small = {k: v for k, v in options.items() if k not in ("poisons", "dataset")}
    result = tour.tour(str(tmp_path / "tour"), quiet=True, **small)
    assert result.passed
    out, err = capsys.readouterr()
    assert "random:" in out and "ops:" in out and "check against itself: passed" in out
    assert "dataset digits" not in err  # quiet=True: no progress
    from certify.progress import is_quiet

    assert not is_quiet()  # and the switch is as it was after the call


# ----------------------------------------------------------------------------------------- bad input
def _raises(call, *words):
    """Bad input is certify.UserError, one line naming the option; never SystemExit."""
    with pytest.raises(certify.UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize("call, words", [
    (lambda: certify.run(sample=10), ("run: unknown option 'sample'", "did you mean 'samples'")),
    (lambda: certify.run(frobnicate=1), ("unknown option 'frobnicate'", "help(certify.run)")),
    (lambda: certify.run(samples="1000"), ("samples must be an integer",)),
    (lambda: certify.run(samples=0), ("samples must be a positive integer",)),
    (lambda: certify.run(poisons="miue"), ("poisons must be a list",)),
    (lambda: certify.run(poisons=["nosuch"], executor="serial"), ("unknown poison 'nosuch'",)),
    (lambda: certify.run(executor="threads"), ("executor",)),
    (lambda: certify.run(skip=["nothing"]), ("skip",)),
    (lambda: certify.run(quiet="yes"), ("quiet must be True or False",)),
    (lambda: certify.run(config=3), ("config must be the path of a YAML file",)),
    (lambda: certify.run(config="/nonexistent.yaml"), ("no such file",)),
    (lambda: certify.audit("npz:a.npz", "digits:train", "digits:test", poisons=["miue"]),
     ("audit: unknown option 'poisons'",)),
    (lambda: certify.audit(3, "digits:train", "digits:test"), ("audit: release must be a string",)),
    (lambda: certify.audit("npz:a.npz", "digits:train", "digits:test", budget=8), ("budget must be a string",)),
    (lambda: certify.audit("npz:a.npz", "digits:train", "digits:test", alpha=2.0), ("alpha must be in (0, 1)",)),
    (lambda: certify.plan("random", ["8/255"], skip=["scores"]), ("plan: unknown option 'skip'",)),
    (lambda: certify.plan("random", 8), ("budgets must be a list",)),
    (lambda: certify.plan("random", ["8/255"], target_accuracy="high"), ("target_accuracy must be",)),
    (lambda: certify.plan("random", ["8/255"], target_accuracy=2.0, dataset="digits"), ("--target-accuracy",)),
    (lambda: certify.plan("random", ["8/255"], target_undefended=1), ("target_undefended must be bool",)),
    (lambda: certify.check("a.json", "b.json", tolerance=-1), ("--tolerance",)),
    (lambda: certify.check("a.json", "b.json", alpha="x"), ("--alpha",)),
    (lambda: certify.check(5, "b.json"), ("check: baseline must be a report.json path or a certify.Report",)),
    (lambda: certify.check("/nonexistent/a.json", "b.json"), ("a.json", "no such file")),
])
def test_bad_options_raise_user_error_naming_them(call, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, and if it were, not into the repository
    _raises(call, *words)
    assert list(tmp_path.iterdir()) == []


def test_check_takes_keywords_only():
    with pytest.raises(TypeError):
        certify.check("a.json", "b.json", 0.1)


def test_load_of_what_is_not_a_report_is_user_error(tmp_path):
    (tmp_path / "bad.json").write_text("{oops")
    _raises(lambda: certify.Report.load(tmp_path / "bad.json"), "not valid JSON")
    (tmp_path / "foreign.json").write_text(json.dumps({"results": [1]}))
    _raises(lambda: certify.Report.load(tmp_path / "foreign.json"), "not a ue-certify report")
    broken = make_report()
    del broken["poisons"]["miue"]["empirical"]["clean_accuracy"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    _raises(lambda: certify.Report.load(tmp_path / "broken.json"), "clean_accuracy")
    _raises(lambda: certify.Report.load(tmp_path), "report.json", "no such file")  # a directory without one
    _raises(lambda: certify.Plan.load(tmp_path / "foreign.json"), "not a ue-certify plan")
    _raises(lambda: certify.Plan.load(tmp_path / "bad.json"), "not valid JSON")


def test_a_report_from_a_dict_is_the_same_view():
    doc = make_report()
    report = certify.Report(copy.deepcopy(doc))
    assert report.to_dict() == doc and report.path is None
    assert report.poisons["miue"].protected_accuracy == doc["poisons"]["miue"]["empirical"]["protected_accuracy"]
