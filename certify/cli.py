"""The `certify` command: argument parsing, printing and exit codes over the functions of `certify`
(certify/api.py), and bad input as one line with exit 2."""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys

from certify.errors import CheckFailed, UserError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2
# a quoted value of thousands of characters (a 5000-digit --samples) is cut in messages, not echoed whole
LONG_VALUE = re.compile(r"'([^']{40})[^']+'")


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # so that `--sigma -1e-9` reaches validation as a number instead of looking like an option
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-\d.*,")

    def error(self, message):  # one line, exit 2 (argparse prints the whole usage otherwise)
        raise UserError(f"{self.prog}: " + LONG_VALUE.sub(r"'\1…'", message))


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _defenses(value: str) -> list[str]:
    """--defense: a list; '' or `none` alone is no defense (the default is the verdict's minimum suite)."""
    names = _list(value)
    return [] if names == ["none"] else names


def _victims(value: str) -> list[str]:
    """--victims: architectures, every item named (an empty one is a typo, not "no victim")."""
    names = [v.strip() for v in value.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"an empty item in {value!r}: name each architecture once "
                                         "(see `certify list`)")
    return names


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in _list(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


def _sigma(value: str):
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None


def _image_size_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", dest="image_size", type=int, metavar="S",
                   help="resize every image to SxS (shorter side to S, centre crop, antialiased); "
                   "needed for image folders of mixed sizes")


def _evaluation_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `audit` (they run the same stages)."""
    p.add_argument("--config", help="YAML file of settings (flags override it)")
    p.add_argument("--model", help="architecture (see `certify list`); default: the dataset's")
    p.add_argument("--victims", type=_victims,
                   help="victim architectures (comma-separated, see `certify list`): each trains on the release, "
                   "the clean data and under each defense (default: the --model alone)")
    p.add_argument("--defense", dest="defenses", type=_defenses,
                   help="comma-separated defenses to apply (default jpeg,jpeg50,grayscale; '' or none: none)")
    p.add_argument("--samples", type=int, help="Monte-Carlo draws N for the certificate (default 1000)")
    p.add_argument("--out", help="report directory (default reports/runs/<timestamp>-<poisons>/)")
    p.add_argument("--seed", type=int, help="run seed (default 0)")
    p.add_argument("--seeds", type=int, help="replicates K: replicate i runs at seed + i; accuracies get the "
                   "mean and a 95%% interval over them (default 1, at most 20)")
    p.add_argument("--independent-models", dest="independent_models", type=int,
                   help="K models trained normally on each release whose distances to the certificate's "
                   "surrogate are set against the certified eta (default 5; 0: none)")
    p.add_argument("--sigma", type=_sigma, help="weight-noise sigma, or 'auto' (default)")
    p.add_argument("--q", type=float, help="quantile q in (0, 1) (default 0.9)")
    p.add_argument("--alpha", type=float, help="failure probability alpha in (0, 1) (default 0.01)")
    p.add_argument("--eta-sigma", dest="eta_sigma", type=_floats, help="eta grid as multiples of sigma")
    p.add_argument("--coverage", choices=["per-eta", "bonferroni"], help="per-eta (default) or whole-curve")
    p.add_argument("--executor", choices=["ray", "serial"], help="where the tasks run (default ray)")
    p.add_argument("--workers", type=int, help="CPUs of the local Ray instance (default: every core)")
    p.add_argument("--threads", type=int, help="torch threads of each task (default 1)")
    p.add_argument("--address", help="an existing Ray cluster (default: a local instance)")
    p.add_argument("--connect-timeout", dest="connect_timeout", type=float,
                   help="seconds to wait for the cluster at --address (default 60)")
    p.add_argument("--skip", type=_list, help="stages to skip: certify,scores,recovery")
    _image_size_option(p)
    p.add_argument("--profile", choices=["quick", "reference"], help="solver settings (default quick)")
    p.add_argument("--no-baseline", dest="baseline", action="store_const", const=False,
                   help="drop the clean control's own row")
    p.add_argument("--cache-dir", dest="cache_dir", help="artifact cache (default ~/.cache/certify)")
    p.add_argument("--resume", action="store_const", const=True, help="finish the interrupted run in --out")
    p.add_argument("--data-root", dest="data_root", help="where torchvision datasets live")
    p.add_argument("--download", action="store_const", const=True, help="let torchvision download datasets")


def build_parser() -> Parser:
    top = Parser(prog="certify", description="Certify and evaluate unlearnable examples (data poisons "
                 "that protect images from unauthorized training).")
    top.add_argument("--quiet", action="store_true", help="no progress output")
    top.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    sub = top.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    r = sub.add_parser("run", help="craft poisons, train, certify, score and report (the main job)")
    r.add_argument("--poison", dest="poisons", type=_list, help="poison name(s), comma-separated, or all")
    r.add_argument("--dataset", help="cifar10-mini (default), digits, mnist, ..., folder:PATH, npz:PATH, idx:DIR, pt:PATH")
    r.add_argument("--test", help="a separate test source (default: the dataset's own test split)")
    _evaluation_options(r)

    p = sub.add_parser("poison", help="craft a poison and export the protected dataset")
    p.add_argument("--poison", required=True, help="poison name")
    p.add_argument("--dataset", help="dataset (default cifar10-mini)")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--format", choices=["png", "npz"], default="png")
    p.add_argument("--seed", type=int)
    p.add_argument("--model")
    p.add_argument("--config")
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--data-root", dest="data_root")
    p.add_argument("--download", action="store_const", const=True)
    _image_size_option(p)

    a = sub.add_parser("audit", help="evaluate a dataset someone already protected (no crafting)")
    a.add_argument("--release", required=True, help="the protected set: folder:PATH, npz:PATH, pt:PATH or "
                   "NAME:train, or delta:PATH (a perturbation of --clean in .pt, .npy or .npz)")
    a.add_argument("--clean", dest="dataset", required=True, help="the clean set it pairs with, image for image")
    a.add_argument("--test", required=True, help="a clean test source")
    a.add_argument("--budget", help="the budget the release was made with, e.g. linf:8/255, l2:0.5 or l0:1 (pixels) "
                   "(a warning when the measured perturbation exceeds it)")
    _evaluation_options(a)

    pl = sub.add_parser("plan", help="how much perturbation is needed: craft, train and certify a poison at "
                        "each budget and recommend the smallest that meets the targets")
    pl.add_argument("--poison", required=True, help="one poison with an l-inf or l2 budget")
    pl.add_argument("--budgets", required=True, help="comma-separated budgets in the poison's norm, "
                    "e.g. 2/255,4/255,8/255,16/255 (l-inf) or 0.5,1 (l2; NORM:VALUE also accepted)")
    pl.add_argument("--target-accuracy", dest="target_accuracy", type=float,
                    help="the attacker's best test accuracy (upper end) must be at most this (in [0, 1])")
    pl.add_argument("--target-drop", "--target-gap", dest="target_drop", type=float,
                    help="the certified drop (the clean control's certified learnability minus the poison's) "
                    "must be at least this (in [0, 1]; --target-gap is the older name)")
    pl.add_argument("--target-undefended", dest="target_undefended", action="store_true",
                    help="apply --target-accuracy to the protected accuracy without a defense (default: the "
                    "attacker's best over training normally and each defense)")
    pl.add_argument("--dataset", help="dataset (default cifar10-mini)")
    pl.add_argument("--test", help="a separate test source (default: the dataset's own test split)")
    _evaluation_options(pl)

    c = sub.add_parser("check", help="CI gate: exit 1 if protection got weaker than a baseline")
    c.add_argument("baseline")
    c.add_argument("report")
    c.add_argument("--tolerance", type=float, default=0.02,
                   help="a metric is weaker only if higher than the baseline's by more than this (default 0.02)")
    c.add_argument("--alpha", type=float, default=0.05,
                   help="an accuracy is weaker only if its one-sided p-value is below this, in (0, 1) (default 0.05)")
    c.add_argument("--junit", help="write a JUnit XML file")
    c.add_argument("--format", choices=["text", "github"], default="text",
                   help="github: also an error annotation (::error) per weaker, abstaining or missing metric")

    rep = sub.add_parser("report", help="render report.md and report.html again from report.json")
    rep.add_argument("report_json")

    sub.add_parser("list", help="every registered poison, defense, attack, dataset and model")
    return top


def _flags(ns: argparse.Namespace, names) -> dict:
    return {k: getattr(ns, k) for k in names if getattr(ns, k, None) is not None}


def _command(argv: list[str]) -> str:
    """The command line report.json and plan.json record."""
    return "certify " + shlex.join(argv)


def _common(ns, argv) -> dict:
    """The options every command's function takes from the top-level flags."""
    return {"config": ns.config, "quiet": ns.quiet or ns.json, "command": _command(argv)}


def cmd_run(ns, argv) -> int:
    from certify.api import RUN_OPTIONS, run

    _print_summary(run(**_common(ns, argv), **_flags(ns, RUN_OPTIONS)), ns.json)
    return EXIT_OK


def cmd_audit(ns, argv) -> int:
    from certify.api import AUDIT_OPTIONS, audit

    report = audit(ns.release, ns.dataset, ns.test, budget=ns.budget, **_common(ns, argv), **_flags(ns, AUDIT_OPTIONS))
    _print_summary(report, ns.json)
    return EXIT_OK


def cmd_plan(ns, argv) -> int:
    from certify.api import PLAN_OPTIONS, plan

    if ns.skip is not None or ns.baseline is not None:
        raise UserError("plan: --skip and --no-baseline do not apply (a plan always certifies each budget "
                        "against the clean control)")
    result = plan(ns.poison, ns.budgets, target_accuracy=ns.target_accuracy, target_drop=ns.target_drop,
                  target_undefended=ns.target_undefended, **_common(ns, argv), **_flags(ns, PLAN_OPTIONS))
    if ns.json:
        print(json.dumps({"plan": str(result.path), "recommended": result.recommended, "budgets": result.rows},
                         indent=1))
    else:
        given = ns.target_accuracy is not None or ns.target_drop is not None
        rec = result.recommended or ("none meets the targets" if given else "none (no targets given)")
        print(f"plan: {result.path} (also plan.md, plan.html); recommended budget: {rec}")
    return EXIT_OK


SUMMARY = ("protected_accuracy", "clean_accuracy", "protected_interval", "seeds")  # --json's keys of each poison


def _print_summary(report, as_json: bool) -> None:
    rows = {}
    for row in report.table():
        rows[row["poison"]] = {k: row[k] for k in SUMMARY}
        if row["certified"] is not None:
            rows[row["poison"]].update(sigma=row["sigma"], certified=row["certified"])
    if as_json:
        print(json.dumps({"report": str(report.path), "poisons": rows}, indent=1))
        return
    k = len(report.seeds)
    print(f"report: {report.path} (also report.md, report.html); "
          + (f"means over {k} seeds with 95 % Student-t intervals" if k > 1 else
             "one seed, 95 % Clopper-Pearson intervals over the test images"))
    for name, row in rows.items():
        lo, hi = row["protected_interval"]
        line = (f"  {name:<18} clean {row['clean_accuracy']:.3f}  protected {row['protected_accuracy']:.3f} "
                f"[{lo:.3f}, {hi:.3f}]")
        if "certified" in row:
            cells = " ".join(f"{k}:{'abst' if v is None else f'{v:.3f}'}" for k, v in row["certified"].items())
            line += f"  certified (eta/sigma:value, sigma={row['sigma']}) {cells}"
        print(line)


def cmd_poison(ns, argv) -> int:
    from certify.config import load_config
    from attacks.base import undershoot
    from certify.poison import export_poison

    flags = _flags(ns, ["dataset", "seed", "model", "cache_dir", "data_root", "download", "image_size"])
    cfg = load_config(ns.config, {**flags, "poisons": [ns.poison]})
    manifest = export_poison(cfg, ns.out, ns.format)
    budget = manifest["budget"]
    print(f"wrote {manifest['n']} protected images of {manifest['dataset']} ({ns.poison}, {budget['norm']} "
          f"budget {budget['epsilon']:.5f}, measured {budget['measured']:.5f}) to {ns.out}")
    short = undershoot(ns.poison, budget["norm"], budget["epsilon"], budget["measured"])
    if short:
        print(f"certify: warning: {short}", file=sys.stderr)
    return EXIT_OK


def cmd_check(ns, argv) -> int:
    from certify.api import check

    if ns.format == "github" and ns.json:
        raise UserError("check: --format github and --json both write to stdout; give one of them")
    result = check(ns.baseline, ns.report, tolerance=ns.tolerance, alpha=ns.alpha)
    if ns.junit:
        result.write_junit(ns.junit)
    print(json.dumps(result.to_dict(), indent=1) if ns.json else result.text())
    if ns.format == "github":
        for line in result.annotations():  # GitHub shows each on the workflow run and the pull request
            print(line)
    if result.problem:
        raise CheckFailed(result.problem)
    return result.exit_code


def cmd_report(ns, argv) -> int:
    from certify.report import render

    render(ns.report_json)
    print(f"rendered report.md and report.html beside {ns.report_json}")
    return EXIT_OK


def cmd_list(ns, argv) -> int:
    from attacks.base import POISONS
    from attacks.recovery import RECOVERY
    from certify.data import DATASETS, SPEC_FORMS
    from certify.models import MODELS
    from certify.plugins import BUILT_IN
    from defenses.base import DEFENSES

    def section(title, entries):
        print(title)
        for e in entries:
            tag = " (control)" if getattr(e, "kind", "") == "control" else ""
            print(f"  {e.name:<18} {e.summary}{tag}")

    def by_origin(title, entries):  # the pluggable kinds: built-ins, then each plugin distribution's
        for origin in dict.fromkeys([BUILT_IN] + [e.origin for e in entries]):
            section(f"{title} ({origin if origin == BUILT_IN else 'plugin ' + origin}):",
                    [e for e in entries if e.origin == origin])

    by_origin("poisons", POISONS.entries())
    by_origin("defenses", DEFENSES.entries())
    by_origin("recovery attacks", RECOVERY.entries())
    section("datasets:", DATASETS.entries())
    for form, text in SPEC_FORMS.items():
        print(f"  {form:<18} {text}")
    section("models:", MODELS.entries())
    return EXIT_OK


COMMANDS = {"run": cmd_run, "audit": cmd_audit, "plan": cmd_plan, "poison": cmd_poison, "check": cmd_check, "report": cmd_report, "list": cmd_list}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        ns = build_parser().parse_args(argv)
        if ns.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        from certify.progress import set_quiet

        set_quiet(ns.quiet or ns.json)
        return COMMANDS[ns.command](ns, argv)
    except UserError as e:
        print(f"certify: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CheckFailed as e:
        print(f"certify: check failed: {e}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except MemoryError:  # an input the stated limits did not catch: one line, not a traceback
        print("certify: error: out of memory (the README's Limits table lists what certify checks before "
              "allocating); finished work is saved: rerun with --resume --out DIR", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("certify: interrupted; finished work is saved: rerun with --resume --out DIR", file=sys.stderr)
        return 130


def entry() -> None:
    """The console script. A join that timed out leaves Ray's client inside a C++ call that aborts
    the interpreter's normal shutdown, so such a run ends at once, its one line printed."""
    try:
        code = main()
    except BrokenPipeError:  # `certify list | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    from certify import cluster

    if cluster.abandoned():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
