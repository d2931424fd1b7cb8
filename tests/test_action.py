"""action.yml, the GitHub composite action: its `run:` steps, inputs substituted as GitHub would,
run in bash on digits, pass on a baseline of the same run and fail, annotated, on a stronger one."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import certify

ROOT = Path(__file__).resolve().parents[1]
FAST_YAML = ("dataset: digits\npoisons: [random]\nsamples: 40\nexecutor: serial\nskip: [scores, recovery]\n"
             "train: {epochs: 3}\nsurrogate: {epochs: 2}\nsmoothing: {chunk: 10, sigma_draws: 10}\n")
INSTALL = "Install ue-certify"  # not run here: the tests run inside the installed environment


def _action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def _steps(inputs: dict, tmp: Path):
    """(name, script, env) of each step to run, `${{ inputs.X }}` substituted in its env."""
    def substitute(value: str) -> str:
        return re.sub(r"\$\{\{\s*inputs\.(\w+)\s*\}\}", lambda m: inputs[m.group(1)], value)

    for step in _action()["runs"]["steps"]:
        assert step["shell"] == "bash" and "${{" not in step["run"]  # inputs reach scripts as env only
        if step["name"] != INSTALL:
            yield step["name"], step["run"], {k: substitute(v) for k, v in (step.get("env") or {}).items()}


def _run_action(inputs: dict, tmp: Path) -> list[subprocess.CompletedProcess]:
    summary = tmp / "summary.md"
    # the worktree's code, whichever checkout the environment's console script was installed from
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    results = []
    for name, script, step_env in _steps(inputs, tmp):
        res = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=tmp,
                             env={**env, **step_env}, capture_output=True, text=True, timeout=600)
        results.append(res)
        if res.returncode:
            break
    return results


def test_inputs_are_declared():
    inputs = _action()["inputs"]
    assert set(inputs) == {"config", "baseline", "out", "seeds", "args"}
    assert inputs["config"]["required"] and inputs["baseline"]["required"]
    assert _action()["runs"]["using"] == "composite"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("action")
    (tmp / "fast.yaml").write_text(FAST_YAML)
    baseline = certify.run(config=str(tmp / "fast.yaml"), seeds=1, out=str(tmp / "baseline"),
                           cache_dir=str(tmp / "cache"), quiet=True)
    return tmp, baseline


def test_the_action_passes_against_its_own_baseline(world):
    tmp, baseline = world
    inputs = {"config": "fast.yaml", "baseline": str(baseline.path), "out": "out", "seeds": "1",
              "args": f"--cache-dir {tmp / 'cache'}"}
    run, check = _run_action(inputs, tmp)
    assert run.returncode == 0, run.stderr
    assert check.returncode == 0, check.stdout + check.stderr
    assert "passed:" in check.stdout and "::error" not in check.stdout
    assert (tmp / "out" / "junit.xml").is_file()
    summary = (tmp / "summary.md").read_text()
    assert summary.startswith("### certify check") and "protected_accuracy" in summary


def test_the_action_fails_annotated_against_a_stronger_baseline(world):
    tmp, baseline = world
    stronger = baseline.to_dict()
    sec = stronger["poisons"]["random"]
    sec["empirical"]["protected_accuracy"] = sec["replicates"][0]["protected_accuracy"] = 0.0
    (tmp / "stronger.json").write_text(json.dumps(stronger))
    inputs = {"config": "fast.yaml", "baseline": "stronger.json", "out": "out2", "seeds": "1",
              "args": f"--cache-dir {tmp / 'cache'}"}
    run, check = _run_action(inputs, tmp)
    assert run.returncode == 0, run.stderr
    assert check.returncode == 1
    assert "::error title=certify check%3A random protected_accuracy::WEAKER" in check.stdout
    assert "::error" not in (tmp / "summary.md").read_text()  # the summary holds the table alone


def test_the_gitlab_template_runs_the_same_commands():
    """examples/ci/gitlab-ci.yml: the action's run and check commands, its JUnit file as the job's report."""
    job = yaml.safe_load((ROOT / "examples" / "ci" / "gitlab-ci.yml").read_text())["certify-protection"]
    script = job["script"]
    assert script[1] == ('certify --quiet run --config "$CERTIFY_CONFIG" --seeds "$CERTIFY_SEEDS" '
                         '--out "$CERTIFY_OUT" $CERTIFY_ARGS')
    assert script[2].startswith('certify check "$CERTIFY_BASELINE" "$CERTIFY_OUT/report.json" --junit "$CERTIFY_OUT/junit.xml"')
    assert job["artifacts"]["reports"]["junit"] == "$CERTIFY_OUT/junit.xml"
    steps = {name: script for name, script, _ in _steps(dict.fromkeys(_action()["inputs"], ""), Path("."))}
    assert steps["certify run"].replace("$", "$CERTIFY_") == script[1]
