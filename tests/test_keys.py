"""Cache keys cover exactly what a task's result depends on (issue 29).

Too wide: a setting a task does not read must not make it again (`smoothing.chunk` only regroups the
draws; the run's training settings do not reach a model-free poison; the CPU-only scores do not
depend on the run's device). Too narrow: a method's code digest covers the project modules it
imports, so editing a shared helper makes again every artifact that used it, and nothing else.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from certify.cache import Cache
from certify.cli import main
from certify.config import load_config
from certify.context import ModelSpec, RunContext
from certify.pipeline import add_tasks
from certify.scores.stages import add_mi, add_sal

ROOT = Path(__file__).resolve().parents[1]
TINY = "train: {epochs: 2}\nsurrogate: {epochs: 1}\nsmoothing: {chunk: 10, sigma_draws: 5}\n"
VOLATILE = ("created", "timings", "command", "execution")


# --- which tasks a changed setting makes again, from the graph alone (nothing runs) -------------------
def _graph(digits, tmp_path, poisons=("random", "em"), device="cpu", **overrides):
    """Every task of a digits run of `poisons` (victims, σ, certificate, recovery, scores), added by the
    slices themselves: {(stage, poison): key}, and the graph's tasks by key."""
    cfg = load_config(None, {"dataset": "digits", "executor": "serial", "samples": 20, **overrides})
    ctx = RunContext(cfg, digits, Cache(tmp_path / "cache"), ModelSpec("cnn", digits.shape, digits.num_classes),
                     device, "data-digits", "test-digits")
    ctx.graph.const(ctx.data_key, digits)
    add_tasks(ctx, {}, [{"name": name} for name in ("none", *poisons)])
    return ctx.graph.tasks


def _again(before: dict, after: dict) -> list[tuple[str, str | None]]:
    """(stage, poison) of the tasks of `after` whose artifact `before`'s run did not make."""
    return sorted({(t.stage, t.poison) for k, t in after.items() if k not in before}, key=str)


def test_draws_per_work_unit_change_only_the_draw_tasks(digits, tmp_path):
    before = _graph(digits, tmp_path, smoothing={"chunk": 10})
    after = _graph(digits, tmp_path, smoothing={"chunk": 5})
    again = _again(before, after)
    assert again and {stage for stage, _ in again} == {"draws"}, again
    assert sum(t.stage == "draws" for t in after.values()) == 4 * 3  # 20 draws in chunks of 5, 3 releases


def test_the_sigma_rule_keys_on_its_own_fields(digits, tmp_path):
    base = _graph(digits, tmp_path, smoothing={"sigma_draws": 5})
    more = _graph(digits, tmp_path, smoothing={"sigma_draws": 7})
    stages = {stage for stage, _ in _again(base, more)}
    # σ changes everything downstream of it (PUE would be crafted again too), never the models before it
    assert "sigma" in stages and not stages & {"craft", "train", "independent"}
    threads = _graph(digits, tmp_path, smoothing={"sigma_draws": 5, "threads": 2})  # the draw tasks' threads
    assert {stage for stage, _ in _again(base, threads)} == {"draws"}


def test_training_settings_leave_model_free_poisons_alone(digits, tmp_path):
    free = ("random", "lsp", "ops")
    before = _graph(digits, tmp_path, poisons=free + ("em",), train={"epochs": 2})
    after = _graph(digits, tmp_path, poisons=free + ("em",), train={"epochs": 3})
    crafted = {p for stage, p in _again(before, after) if stage == "craft"}
    assert crafted == {"em"}  # and the clean control `none` keeps its release too


def test_a_surrogate_from_scratch_does_not_read_the_run_epochs(digits, tmp_path):
    fixed = {"sigma": 0.02, "surrogate": {"init": "scratch", "epochs": 1}}
    before = _graph(digits, tmp_path, train={"epochs": 2}, **fixed)
    after = _graph(digits, tmp_path, train={"epochs": 3}, **fixed)
    again = _again(before, after)
    assert ("train", "none") in again
    # em crafts with the run's training settings, so its release (and all after it) changes; the clean
    # control's and random's surrogates, trained from scratch on unchanged releases, do not
    assert {p for stage, p in again if stage in ("surrogate", "draws", "recovery")} == {"em"}, again


def test_cpu_only_scores_reserve_no_gpu_and_do_not_depend_on_the_device(digits, tmp_path):
    on_gpu = _graph(digits, tmp_path, device="cuda")
    scores = [t for t in on_gpu.values() if t.stage in ("sal", "mi")]
    assert scores and all(t.gpu == 0.0 and t.args["device"] == "cpu" for t in scores)
    assert all(t.gpu > 0 for t in on_gpu.values() if t.stage in ("train", "draws", "surrogate"))
    keys = []
    for device in ("cpu", "cuda"):  # the same inputs: the same SAL and MI artifacts
        cfg = load_config(None, {"dataset": "digits"})
        ctx = RunContext(cfg, digits, Cache(tmp_path / "cache"), ModelSpec("cnn", digits.shape, digits.num_classes),
                         device, "data-digits", "test-digits")
        for key in ("data-digits", "clean-release", "release", "clean", "victim"):
            ctx.graph.const(key, None)
        keys.append((add_sal(ctx, "release", "victim", "p"), add_mi(ctx, "clean-release", "clean", "release", "victim", "p")))
    assert keys[0] == keys[1]


# --- code digests: a copy of the package, edited, digested in a fresh interpreter ---------------------
DIGESTS = """
import json, sys
root = sys.argv[1]
sys.path.insert(0, root)
import certify
assert certify.__file__.startswith(root), certify.__file__
from attacks.base import POISONS
from attacks.recovery import RECOVERY
from defenses.base import DEFENSES
print(json.dumps({r.what: {n: r.code(n) for n in r.names()} for r in (POISONS, DEFENSES, RECOVERY)}))
"""
EM_FAMILY = {"em", "em-classwise", "miue", "pue", "rem", "tap"}  # the poisons importing attacks/_common.py


def _digests(root: Path) -> dict[str, dict[str, str]]:
    out = subprocess.run([sys.executable, "-c", DIGESTS, str(root)], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _changed(a: dict, b: dict) -> set[str]:
    return {f"{what}:{n}" for what in a for n in a[what] if a[what][n] != b[what][n]}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_editing_a_shared_module_makes_again_exactly_what_imports_it(tmp_path):
    from attacks.base import POISONS
    from attacks.recovery import RECOVERY
    from defenses.base import DEFENSES

    root = tmp_path / "copy"
    for pkg in ("attacks", "certify", "defenses"):
        shutil.copytree(ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.tar.gz"))
    (root / "README.md").write_text("the project\n")
    base = _digests(root)
    here = {r.what: {n: r.code(n) for n in r.names()} for r in (POISONS, DEFENSES, RECOVERY)}
    assert base == here  # names and contents, never where the files lie
    assert set(base["poison"]) >= EM_FAMILY | {"random", "lsp", "none"}

    # a README and a module no method imports: nothing is made again
    (root / "README.md").write_text("the project, described again\n")
    _edit(root / "certify" / "report" / "content.py", '"""What the report says', '"""What the report says (edited)')
    assert _changed(base, _digests(root)) == set()

    # the crafting helpers of the EM family: each of its poisons, and no other method
    _edit(root / "attacks" / "_common.py", "def uniform_init(shape, epsilon: float, gen: torch.Generator)",
          "def uniform_init(shape, epsilon: float, gen: torch.Generator)  ")
    edited = _digests(root)
    assert _changed(base, edited) == {f"poison:{n}" for n in EM_FAMILY}

    # the RWP surrogate: PUE crafts with it, so PUE alone
    _edit(root / "certify" / "certificate" / "surrogate.py", "def rwp_levels(", "def rwp_levels (")
    surrogate = _digests(root)
    assert _changed(edited, surrogate) == {"poison:pue"}

    # the mixing defense: MixUp and CutMix
    _edit(root / "defenses" / "_common.py", "def seeded_mix(", "def seeded_mix (")
    assert _changed(surrogate, _digests(root)) == {"defense:mixup", "defense:cutmix"}


# --- end to end: a changed smoothing.chunk runs the draw tasks only, and the report is the same -------
def _run(tmp_path, capsys, name: str, chunk: int) -> dict:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(TINY.replace("chunk: 10", f"chunk: {chunk}"))
    out = tmp_path / name
    code = main(["--quiet", "run", "--poison", "random", "--dataset", "digits", "--config", str(cfg),
                 "--samples", "20", "--executor", "serial", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    return json.loads((out / "report.json").read_text())


def _numbers(report: dict) -> dict:
    r = {k: v for k, v in report.items() if k not in VOLATILE}
    r["config"] = {k: v for k, v in r["config"].items() if k not in ("out", "smoothing")}
    return r


@pytest.mark.slow
def test_a_changed_chunk_runs_the_draws_again_and_nothing_else(tmp_path, capsys):
    first = _run(tmp_path, capsys, "first", chunk=10)
    assert {t["stage"] for t in first["execution"]["tasks"]} >= {"craft", "train", "sigma", "surrogate", "draws",
                                                                  "sal", "mi", "recovery"}
    second = _run(tmp_path, capsys, "second", chunk=5)
    stages = [t["stage"] for t in second["execution"]["tasks"]]
    assert stages == ["draws"] * (2 * 4), stages  # none and random, 20 draws in chunks of 5
    assert _numbers(second) == _numbers(first)  # draw j depends on (seed, j) only


def test_models_key_on_the_code_that_defines_and_trains_them(tmp_path):
    """A model's artifacts (trained weights, and every task keyed by the model) follow the model's
    definition and the training loop: a change that rounds differently (channels-last batches, say)
    trains again instead of mixing old weights with new ones."""
    from certify.context import ModelSpec, model_code
    from certify.models import MODELS
    from certify.registry import _code_digest

    assert ModelSpec("cnn", (3, 32, 32), 10).key()["code"] == model_code("cnn")
    training = (ROOT / "certify" / "training.py").resolve()
    assert model_code("cnn") == MODELS.code("cnn") + _code_digest(str(training), "certify.training")
    digests = []
    for name, edit in (("same", ""), ("edited", "\n# a comment\n")):  # two copies: digests are cached by path
        copy = tmp_path / name / "certify"
        shutil.copytree(ROOT / "certify", copy, ignore=shutil.ignore_patterns("__pycache__", "*.tar.gz"))
        (copy / "training.py").write_text((copy / "training.py").read_text() + edit)
        digests.append(_code_digest(str(copy / "training.py"), "certify.training"))
    assert digests[0] == _code_digest(str(training), "certify.training") != digests[1]
