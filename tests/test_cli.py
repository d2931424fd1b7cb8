"""The CLI: exit codes, one-line errors without tracebacks, and an end-to-end run on digits."""
import json
import subprocess
import sys

import pytest

from certify.cli import main

FAST = ["--dataset", "digits", "--samples", "40", "--executor", "serial", "--skip", "scores,recovery",
        "--config"]


def fast_config(tmp_path):
    p = tmp_path / "fast.yaml"
    p.write_text("train:\n  epochs: 3\nsurrogate:\n  epochs: 2\nsmoothing:\n  chunk: 10\n  sigma_draws: 10\n")
    return str(p)


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_help_and_list():
    res = subprocess.run([sys.executable, "-m", "certify.cli", "list"], capture_output=True, text=True)
    assert res.returncode == 0
    for name in ("miue", "em", "random", "none", "cifar10-mini", "digits", "cnn", "resnet18"):
        assert name in res.stdout
    res = subprocess.run([sys.executable, "-m", "certify.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "run" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--poison", "nosuch"], "unknown poison 'nosuch'"),
    (["run", "--samples", "0"], "samples must be a positive integer"),
    (["run", "--samples", "-3"], "samples must be a positive integer"),
    (["run", "--q", "1.2"], "q must be in (0, 1)"),
    (["run", "--alpha", "0"], "alpha must be in (0, 1)"),
    (["run", "--sigma", "0"], "sigma must be > 0"),
    (["run", "--sigma", "-1"], "sigma must be > 0"),
    (["run", "--eta-sigma", "0.1,-2"], "eta_sigma must be >= 0"),
    (["run", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["run", "--dataset", "folder:/nonexistent/x", "--out", "OUT"], "/nonexistent/x"),
    (["run", "--defense", "magic"], "unknown defense 'magic'"),
    (["run", "--model", "vgg"], "unknown model 'vgg'"),
    (["run", "--samples", "many"], "invalid int value"),
    (["run", "--config", "/nonexistent.yaml"], "no such file"),
    (["frobnicate"], "invalid choice"),
    (["check", "/nonexistent/a.json", "/nonexistent/b.json"], "a.json"),
    (["report", "/nonexistent/report.json"], "report.json"),
])
def test_bad_input_is_one_line_exit_2(args, message, capsys, tmp_path):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err


def test_end_to_end_digits_resume_and_determinism(tmp_path, capsys):
    cfg = fast_config(tmp_path)
    out1, cache = tmp_path / "r1", tmp_path / "cache"
    args = ["run", "--poison", "random", *FAST, cfg, "--cache-dir", str(cache)]
    code, out, err = run_cli(args + ["--out", str(out1)], capsys)
    assert code == 0, err
    report = json.loads((out1 / "report.json").read_text())
    assert report["schema"] == "ue-certify/report/v1"
    assert set(report["poisons"]) == {"none", "random"}
    none = report["poisons"]["none"]
    assert none["budget"] == {"norm": "none", "epsilon": 0.0, "measured": 0.0}
    assert none["empirical"]["protected_accuracy"] == none["empirical"]["clean_accuracy"]
    rnd = report["poisons"]["random"]
    assert 0 < rnd["budget"]["measured"] <= 8 / 255 + 1e-6
    cert = rnd["certificate"]
    assert len(cert["draws"]) == 40 and cert["samples"] == 40
    assert all((p["k"] is None) == (p["learnability"] is None) for p in cert["curve"])
    for name in ("report.md", "report.html"):
        assert (out1 / name).stat().st_size > 0
    # the same output directory without --resume is refused, and nothing is destroyed
    before = (out1 / "report.json").read_bytes()
    code, _, err = run_cli(args + ["--out", str(out1)], capsys)
    assert code == 2 and "already holds a run" in err
    assert (out1 / "report.json").read_bytes() == before
    # --resume with another configuration is refused
    code, _, err = run_cli(args + ["--out", str(out1), "--resume", "--seed", "5"], capsys)
    assert code == 2 and "another configuration" in err
    # the same command again (fresh --out, warm cache) gives identical numbers
    out2 = tmp_path / "r2"
    code, _, err = run_cli(args + ["--out", str(out2)], capsys)
    again = json.loads((out2 / "report.json").read_text())
    assert again["poisons"] == report["poisons"]
    # a separate test source: digits' own test half
    code, _, err = run_cli(args + ["--out", str(tmp_path / "r3"), "--test", "digits:test"], capsys)
    assert code == 0, err
    # the gate: the run against itself passes
    code, out, _ = run_cli(["check", str(out1 / "report.json"), str(out2 / "report.json")], capsys)
    assert code == 0
    # scores on: the victims are retrained to keep per-epoch checkpoints, with the same weights, so
    # the surrogates fine-tuned from them come from the cache
    surrogates = sorted(p.name for p in (cache / "surrogate").iterdir())
    assert len(surrogates) == 2
    with_scores = [a if a != "scores,recovery" else "recovery" for a in args]
    code, _, err = run_cli(with_scores + ["--out", str(tmp_path / "r4")], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (cache / "surrogate").iterdir()) == surrogates


def test_output_cut_short_by_its_reader_is_no_traceback():
    """`certify list | head -1`: the pipe closes early; no traceback, exit 0."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import certify.cli as c; c.entry()", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("flag, defenses", [
    (None, ["jpeg", "jpeg50", "grayscale"]),  # the default: the verdict's minimum suite
    ("", []), ("none", []), ("jpeg", ["jpeg"]), ("at8,jpeg50", ["at8", "jpeg50"]),
])
def test_defense_flag_defaults_to_the_suite_and_empty_or_none_skips_it(flag, defenses):
    from certify.api import RUN_OPTIONS
    from certify.cli import _flags, build_parser
    from certify.config import load_config

    args = ["run", "--dataset", "digits"] + ([] if flag is None else ["--defense", flag])
    ns = build_parser().parse_args(args)
    assert load_config(None, _flags(ns, RUN_OPTIONS)).defenses == defenses
