"""Safety: nothing a user hands over (a config, a dataset, a cache artifact, a report) can run code,
and names from user input are escaped in the HTML report.

The source checks parse every Python file of the shipped packages and scripts (ast, so comments and
strings do not count): YAML only through safe_load, torch.load only with weights_only=True, no
pickle-family loads, np.load only with allow_pickle=False. The behavioural checks hand the real
loaders a payload that would create a file if it were ever unpickled or constructed.
"""
from __future__ import annotations

import ast
import html
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("certify", "attacks", "defenses", "scripts", "bench")


def _sources() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 20 and any(p.name == "cache.py" for p in files)
    return files


def _calls(tree: ast.AST):
    """(dotted name of the callee, call node) for every call, e.g. ('np.load', node)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            yield ".".join(reversed(parts)), node


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<not a constant>"
    return "<absent>"


@pytest.fixture(scope="module")
def calls():
    out = []
    for p in _sources():
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        out += [(f"{p.relative_to(ROOT)}:{node.lineno}", name, node) for name, node in _calls(tree)]
    return out


def test_yaml_only_through_safe_load(calls):
    unsafe = {"yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load",
              "yaml.full_load_all"}
    assert [(where, name) for where, name, _ in calls if name in unsafe] == []
    assert any(name == "yaml.safe_load" for _, name, _ in calls)  # the config reader is really found
    for p in _sources():  # nor the loader classes that construct Python objects
        text = p.read_text(encoding="utf-8")
        for bad in ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader", "unsafe_load"):
            assert bad not in text, f"{p.relative_to(ROOT)} mentions {bad}"


def test_torch_load_only_weights_only(calls):
    loads = [(where, node) for where, name, node in calls if name == "torch.load"]
    assert loads, "expected the cache's torch.load"
    assert [where for where, node in loads if _keyword(node, "weights_only") is not True] == []


def test_no_pickle_family_loads(calls):
    banned = ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "dill.load", "dill.loads",
              "joblib.load", "pd.read_pickle", "pandas.read_pickle", "marshal.load", "marshal.loads")
    assert [(where, name) for where, name, _ in calls if name in banned] == []
    for p in _sources():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "cloudpickle", "dill", "marshal"):
                assert not {a.name for a in node.names} & {"load", "loads", "Unpickler"}, p


def test_np_load_without_pickles(calls):
    # the npz reader parses .npy members itself and refuses object arrays (no np.load at all); any
    # np.load added elsewhere must refuse pickles
    loads = [(where, node) for where, name, node in calls if name in ("np.load", "numpy.load")]
    assert [where for where, node in loads if _keyword(node, "allow_pickle") is not False] == []


class _Payload:
    """Unpickling this runs `touch PATH`: a stand-in for an attacker's file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


def test_poisoned_cache_artifacts_are_not_unpickled(tmp_path):
    from certify.cache import Cache

    marker = tmp_path / "PWNED"
    cache = Cache(tmp_path / "cache")
    p = cache.path("model-abc", ".pt")
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": _Payload(marker)}, p)
    assert cache.load("model-abc") is None  # refused, so the task makes it again: never trusted
    assert not marker.exists() and not p.exists()


def test_cache_artifact_of_another_shape_is_made_again(tmp_path, capsys):
    """A valid artifact under a craft task's key that is no release of the dataset (3 channels for
    digits' 1, float pixels, a list) is crafted again, not handed on to training or an export."""
    from certify.cache import Cache
    from certify.cli import main

    cache = tmp_path / "cache"

    def export(n: int) -> np.ndarray:
        out = tmp_path / f"out{n}"
        assert main(["--quiet", "poison", "--poison", "random", "--dataset", "digits", "--format", "npz",
                     "--out", str(out), "--cache-dir", str(cache)]) == 0, capsys.readouterr().err
        with np.load(out / "data.npz") as z:
            return z["x"]

    first = export(0)
    (artifact,) = (cache / "craft").glob("craft-*.pt")
    good = torch.load(artifact, weights_only=True)["released"]
    for planted in ({"released": good.repeat(1, 3, 1, 1)}, {"released": good.float()}, [good],
                    {"released": torch.empty_like(good, device="meta")}):  # a shape without values
        torch.save(planted, artifact)
        assert np.array_equal(export(1 + len(os.listdir(tmp_path))), first)
        assert torch.equal(torch.load(artifact, weights_only=True)["released"], good)  # made again, stored


def test_cache_entry_that_is_no_file_is_made_again(tmp_path):
    """A folder or a FIFO under an artifact's name (fourth pass, issue 32): torch.load of a FIFO waited
    forever, and a folder's unlink raised IsADirectoryError; both are absent, and the next save replaces them."""
    from certify.cache import Cache

    cache = Cache(tmp_path / "cache")
    for plant in (lambda p: p.mkdir(), os.mkfifo, lambda p: p.symlink_to(p)):
        p = cache.path("craft-abc", ".pt")
        p.parent.mkdir(parents=True, exist_ok=True)
        plant(p)
        assert cache.load("craft-abc") is None
        cache.save("craft-abc", {"released": torch.zeros(2)})
        assert p.is_file() and not p.is_symlink()
        assert torch.equal(cache.load("craft-abc")["released"], torch.zeros(2))
        p.unlink()


def test_pickled_npz_dataset_is_refused(tmp_path, capsys):
    from certify.cli import main

    marker = tmp_path / "PWNED"
    np.savez(tmp_path / "evil.npz", x=np.array([_Payload(marker)] * 4, dtype=object), y=np.array([0, 1, 0, 1]))
    code = main(["run", "--dataset", f"npz:{tmp_path / 'evil.npz'}", "--executor", "serial",
                 "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "not a readable .npz" in err and "Traceback" not in err
    assert not marker.exists()


def test_yaml_python_tags_are_not_constructed(tmp_path, capsys):
    from certify.cli import main

    marker = tmp_path / "PWNED"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"seed: !!python/object/apply:os.system [\"touch '{marker}'\"]\n")
    code = main(["run", "--config", str(cfg), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "malformed YAML" in err
    assert not marker.exists()


def _report(dataset: str, poison: str) -> dict:
    return {"schema": "ue-certify/report/v1", "created": "2025-01-01T00:00:00+00:00",
            "command": f"certify run --poison '{poison}' --dataset '{dataset}'", "seed": 0,
            "config": {"poisons": [poison], "dataset": dataset},
            "environment": {"python": "3.12", "torch": "2", "device": "cpu", "executor": "serial", "workers": 1},
            "dataset": {"name": dataset, "n_train": 10, "n_test": 10, "shape": [1, 8, 8], "classes": 2},
            "model": {"arch": "cnn", "parameters": 100},
            "poisons": {name: {"budget": {"norm": "none" if name == "none" else "linf", "epsilon": 0.0,
                                          "measured": 0.0},
                               "empirical": {"clean_accuracy": 0.9, "protected_accuracy": 0.5,
                                             "peak_protected_accuracy": 0.6,
                                             "defenses": {poison: {"accuracy": 0.6, "peak_accuracy": 0.7}},
                                             "clean_history": [0.5, 0.9], "protected_history": [0.4, 0.5]}}
                        for name in ("none", poison)}}


@pytest.mark.parametrize("evil", ["<script>alert('x')</script>", "\"><script src=//e.example/x.js></script>",
                                  "</title><SCRIPT>alert(1)</SCRIPT>", "x' onload='alert(1)"])
def test_html_report_escapes_user_names(tmp_path, evil):
    from certify.report import write_report

    write_report(_report(dataset=f"folder:/data/{evil}", poison=evil), tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    lowered = page.lower()
    assert "<script" not in lowered and "</script" not in lowered
    assert lowered.count("<title>") == 1 and lowered.count("</title>") == 1
    assert evil not in page  # never raw, quotes included (no attribute break-out) ...
    assert html.escape(evil, quote=True) in page  # ... but shown to the reader as text
    assert all(c.isalnum() or c in "_.-" for f in (tmp_path / "figures").glob("*") for c in f.name)


def test_written_files_get_the_usual_permissions(tmp_path):
    """Reports and artifacts are written through a temporary file (mkstemp: 0600); the result has
    the permissions any new file gets (0666 less the umask), so others can read a report."""
    import os
    from pathlib import Path
    from certify.files import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "r.json", lambda tmp: Path(tmp).write_text("{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_cached_model_that_is_not_the_architectures_weights_is_trained_again(tmp_path, capsys):
    """A model artifact whose fields hold strings, or weights of another shape (fourth pass, issue 32),
    was a TypeError where it was loaded; it is trained again and the report is the first one's."""
    import json

    from certify.cli import main

    (tmp_path / "c.yaml").write_text("dataset: digits\ntrain: {epochs: 1}\n")
    # the certificate's surrogate starts from the stored victim: it loads the state
    args = ["--quiet", "run", "--config", str(tmp_path / "c.yaml"), "--poison", "random", "--defense", "",
            "--skip", "scores,recovery", "--samples", "10", "--executor", "serial", "--cache-dir", str(tmp_path / "cache")]

    def accuracies(n: int) -> dict:
        assert main([*args, "--out", str(tmp_path / f"out{n}")]) == 0, capsys.readouterr().err
        report = json.loads((tmp_path / f"out{n}" / "report.json").read_text())
        return {p: s["empirical"]["protected_accuracy"] for p, s in report["poisons"].items()}

    first = accuracies(0)
    models = sorted((tmp_path / "cache" / "model").glob("model-*.pt"))
    assert models
    for i, planted in enumerate(({"weight": "a string"}, {k: v[..., :1] if v.dim() else v for k, v in
                                                          torch.load(models[0], weights_only=False)["state"].items()})):
        for m in models:
            artifact = torch.load(m, weights_only=False)
            torch.save({**artifact, "state": planted}, m)
        assert accuracies(1 + i) == first


def test_out_of_memory_is_one_line(monkeypatch, capsys):
    """An allocation no stated limit caught is one line and exit 2, not a MemoryError traceback."""
    from certify import cli

    def exhausted(ns, argv):
        raise MemoryError

    monkeypatch.setitem(cli.COMMANDS, "list", exhausted)
    assert cli.main(["list"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("certify: error: out of memory")
