"""What a Ray worker imports to run the tasks of a run: never the libraries it does not use.

torchvision's import pulls in torch._dynamo (~150 MiB and ~1 s), scipy.stats ~46 MiB and ~0.6 s,
statsmodels pandas: in each worker process, on the main job's memory peak and its start. The
modules are imported in a fresh interpreter, as a worker does when it unpickles a task.
"""
import functools
import subprocess
import sys

from certify import pipeline, replicates
from certify.config import load_config

HEAVY = ("torchvision", "torch._dynamo", "scipy.stats", "statsmodels", "pandas")


def _imported_by(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip())


def _task_modules(tmp_path) -> set[str]:
    """The modules of the functions of every task the main job plans (on digits: the same stages)."""
    cfg = load_config(None, {"poisons": ["miue"], "dataset": "digits", "cache_dir": str(tmp_path)})
    ctx = pipeline.load_context(cfg)
    for rep in replicates.contexts(ctx):
        pipeline.add_tasks(rep, {}, [{"name": n} for n in pipeline.poison_names(cfg)])
    fns = [t.fn.func if isinstance(t.fn, functools.partial) else t.fn for t in ctx.graph.tasks.values()]
    return {f.__module__ for f in fns}


def test_task_modules_and_registries_import_no_heavy_library(tmp_path):
    modules = _task_modules(tmp_path)
    assert {"certify.crafting", "certify.victims"} <= modules  # the plan was read
    registries = ("from attacks.base import POISONS; from attacks.recovery import RECOVERY; "
                  "from defenses.base import DEFENSES; from certify.models import MODELS; "
                  "from certify.data._common import DATASETS; "
                  "[r.names() for r in (POISONS, RECOVERY, DEFENSES, MODELS, DATASETS)]")
    assert _imported_by("\n".join(f"import {m}" for m in sorted(modules)) + "\n" + registries) == []


def test_the_probe_sees_a_heavy_import():
    assert _imported_by("import certify.certificate.bounds") == ["scipy.stats"]
