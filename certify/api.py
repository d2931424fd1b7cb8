"""`certify.run`, `certify.audit`, `certify.plan` and `certify.check`: the commands as functions.

Options are the CLI's flags with underscores (`--cache-dir` is `cache_dir`, `--poison` is
`poisons`, a list); each command's options are the flags it takes, and `config="file.yaml"` and
`quiet=True` as for every command. One path from options to a run: `certify.config.load_config` (the
YAML file, then the options over it) validates them as it does the CLI's flags, so bad input is the
CLI's one line, raised as `certify.UserError`. The CLI (certify/cli.py) parses flags into these
options and calls these functions, passing its command line as `command` (what report.json records).

Heavy modules (torch, Ray) are imported inside the functions: `import certify` stays cheap.
"""
from __future__ import annotations

import contextlib
import os

from certify.errors import UserError
from certify.views import CheckResult, Plan, Report

# The options of `run`: RunConfig fields, one per flag of `certify run` (its dest).
RUN_OPTIONS = ("poisons", "dataset", "test", "model", "victims", "defenses", "samples", "out", "seed", "seeds",
               "independent_models", "sigma", "q", "alpha", "eta_sigma", "coverage", "executor", "workers",
               "threads", "address", "connect_timeout", "skip", "profile", "baseline", "cache_dir", "resume",
               "data_root", "download", "image_size")
# `audit` takes the release, clean set and test set as its arguments; the control is its baseline
AUDIT_OPTIONS = tuple(o for o in RUN_OPTIONS if o not in ("poisons", "dataset", "test"))
# a plan always certifies each budget against the clean control, without scores or recovery
PLAN_OPTIONS = tuple(o for o in RUN_OPTIONS if o not in ("poisons", "skip", "baseline"))
EVERY_COMMAND = ("config", "quiet")  # besides each command's own


def _options(command: str, given: dict, allowed: tuple[str, ...]) -> tuple[str | None, bool, dict]:
    """(the config file, quiet, the RunConfig overrides) of a call's options; UserError naming an
    unknown option or a config/quiet of the wrong type. The overrides' values are checked by
    `load_config`, as the CLI's are."""
    known = allowed + EVERY_COMMAND
    for name in given:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (see help(certify.{command}))"
            raise UserError(f"{command}: unknown option {name!r}{hint}")
    config, quiet = given.get("config"), given.get("quiet", False)
    if config is not None and not isinstance(config, (str, os.PathLike)):
        raise UserError(f"{command}: config must be the path of a YAML file, got {config!r}")
    if not isinstance(quiet, bool):
        raise UserError(f"{command}: quiet must be True or False, got {quiet!r}")
    flags = {k: v for k, v in given.items() if k not in EVERY_COMMAND}
    return (os.fspath(config) if config is not None else None), quiet, flags


def _call(command: str, args: tuple, options: dict) -> str:
    """What report.json records as the command of a call from Python: the call itself."""
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in options.items()]
    return f"certify.{command}({', '.join(shown)})"


def _text(command: str, name: str, value) -> str:
    if not isinstance(value, str):
        raise UserError(f"{command}: {name} must be a string, got {value!r}")
    return value


@contextlib.contextmanager
def _progress(quiet: bool):
    """Progress lines on stderr unless `quiet`, as the CLI's --quiet; restored afterwards."""
    from certify import progress

    before = progress.is_quiet()
    progress.set_quiet(quiet)
    try:
        yield
    finally:
        progress.set_quiet(before)


def run(*, command: str | None = None, **options) -> Report:
    """Craft each poison, train, defend, certify, score and report: `certify run` in Python.

        >>> report = certify.run(poisons=["miue", "em"], dataset="digits", samples=1000,
        ...                      skip=["recovery"], executor="serial", out="reports/runs/mine")
        >>> report.verdict("miue").level
        >>> report.poisons["em"].certificate.curve

    Options are `certify run`'s flags with underscores (see `certify run --help`): poisons, dataset,
    test, model, victims, defenses, samples, out, seed, seeds, independent_models, sigma, q, alpha,
    eta_sigma, coverage, executor, workers, threads, address, connect_timeout, skip, profile, baseline,
    cache_dir, resume, data_root, download, image_size; lists are lists (`poisons=["miue"]`,
    `defenses=[]` for none), `baseline=False` is --no-baseline. `config` a YAML file the options
    override; `quiet=True` silences progress. Bad input raises `certify.UserError`. Returns the
    Report written to `out` (default reports/runs/<timestamp>-<poisons>/). report.json records
    `command` as the run's command (default: this call, e.g. "certify.run(poisons=['miue'])").
    """
    config, quiet, flags = _options("run", options, RUN_OPTIONS)
    with _progress(quiet):
        from certify.config import load_config
        from certify.pipeline import run as run_pipeline

        cfg = load_config(config, flags)
        _, out = run_pipeline(cfg, command or _call("run", (), options))
    return Report.load(out / "report.json")


def audit(release: str, clean: str, test: str, *, budget: str | None = None, command: str | None = None,
          **options) -> Report:
    """Evaluate a dataset someone already protected (no crafting): `certify audit` in Python.

        >>> report = certify.audit("npz:protected.npz", "npz:clean.npz", "npz:test.npz",
        ...                        budget="linf:8/255", executor="serial")
        >>> report.poisons["release"].protected_accuracy, report.verdict("release").level

    `release` the protected set (folder:PATH, npz:PATH, pt:PATH, NAME:train, or delta:PATH, a
    perturbation of `clean`), `clean` the clean set it pairs with image for image, `test` a clean
    test source; `budget` the declared budget (e.g. linf:8/255, l2:0.5, l0:1). Options are `run`'s
    less poisons, dataset and test. Returns the Report; its poison `release` is the audited set.
    """
    config, quiet, flags = _options("audit", options, AUDIT_OPTIONS)
    release, clean, test = (_text("audit", n, v) for n, v in (("release", release), ("clean", clean), ("test", test)))
    if budget is not None:
        _text("audit", "budget", budget)
    with _progress(quiet):
        from certify.auditing import audit as run_audit
        from certify.config import load_config
        from certify.registry import CONTROL

        cfg = load_config(config, {**flags, "dataset": clean, "test": test, "poisons": [CONTROL]})
        call = _call("audit", (release, clean, test), {**({"budget": budget} if budget else {}), **options})
        _, out = run_audit(cfg, release, command or call, budget)
    return Report.load(out / "report.json")


def _budgets(value) -> str:
    """`budgets` as the CLI's comma-separated text: a list of labels or numbers, or that text."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(b, (str, int, float)) and not isinstance(b, bool)
                                                          for b in value):
        return ",".join(str(b) for b in value)
    if isinstance(value, str):
        return value
    raise UserError(f"plan: budgets must be a list of budgets, e.g. ['4/255', '8/255'], got {value!r}")


def plan(poison: str, budgets, *, target_accuracy: float | None = None, target_drop: float | None = None,
         target_undefended: bool = False, command: str | None = None, **options) -> Plan:
    """Craft, train and certify one poison at each budget and recommend the smallest that meets the
    targets: `certify plan` in Python.

        >>> plan = certify.plan("miue", ["2/255", "4/255", "8/255"], target_accuracy=0.3,
        ...                     dataset="digits", executor="serial")
        >>> plan.recommended, [row["certified"] for row in plan.rows]

    `budgets` in the poison's norm (l-inf labels like '8/255', l2 numbers); `target_accuracy` the
    attacker's best accuracy (upper end, over the defenses unless `target_undefended`) must be at
    most this; `target_drop` the certified drop at least this. Options are `run`'s less poisons, skip
    and baseline. Returns the Plan written to `out` (default reports/plans/<timestamp>-<poison>/).
    """
    from typing import Union

    from certify.params import coerce

    config, quiet, flags = _options("plan", options, PLAN_OPTIONS)
    _text("plan", "poison", poison)
    spec = _budgets(budgets)
    accuracy = coerce(target_accuracy, Union[float, None], "target_accuracy", "plan")
    drop = coerce(target_drop, Union[float, None], "target_drop", "plan")
    coerce(target_undefended, bool, "target_undefended", "plan")
    with _progress(quiet):
        from certify.config import load_config
        from certify.planning import Targets, load_request, run_plan

        cfg = load_config(config, {**flags, "poisons": [poison]})
        request = load_request(cfg, poison, spec, Targets(accuracy, drop,
                                                          "undefended" if target_undefended else "best-defended"))
        targets = {k: v for k, v in (("target_accuracy", target_accuracy), ("target_drop", target_drop),
                                     ("target_undefended", target_undefended)) if v is not None and v is not False}
        _, out = run_plan(cfg, request, command or _call("plan", (poison, budgets), {**targets, **options}))
    return Plan.load(out / "plan.json")


def _report_of(value, what: str) -> tuple[dict, str]:
    """(the validated report dict, its name in the result) of a Report or a report.json path."""
    if isinstance(value, Report):
        return value.to_dict(), str(value.path or f"the {what}")
    if isinstance(value, (str, os.PathLike)):
        from certify.report import load_report

        return load_report(value), os.fspath(value)
    raise UserError(f"check: {what} must be a report.json path or a certify.Report, got {value!r}")


def check(baseline, report, *, tolerance: float = 0.02, alpha: float = 0.05) -> CheckResult:
    """The CI gate: did protection get weaker from `baseline` to `report`? `certify check` in Python.

        >>> result = certify.check("reports/baseline/digits-gate/report.json", report)
        >>> result.passed, result.exit_code
        >>> [row for row in result.rows if row["verdict"] == "WEAKER"]

    `baseline` and `report` are report.json paths or Reports. An accuracy is weaker when it is higher
    with a one-sided p (Holm-adjusted over the check) below `alpha` and by more than `tolerance`; a
    certified bound when higher by more than `tolerance` (certify/gate.py). Reports that do not
    compare like with like raise `certify.UserError`.
    """
    from certify import gate

    gate.require_settings(tolerance, alpha)
    base, base_name = _report_of(baseline, "baseline")
    doc, name = _report_of(report, "report")
    return gate.evaluate(base, doc, (base_name, name), tolerance, alpha)

