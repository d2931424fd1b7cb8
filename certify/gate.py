"""`certify check BASELINE.json REPORT.json [--tolerance F] [--alpha A] [--junit FILE] [--format github]`
and `certify.check`: the CI gate.

Exit 1 if any poison present in the baseline got weaker in the report, or the poison, or a judged
metric of it, is missing from the report. Exit 0 otherwise. A table is printed either way. The clean
control `none` is shown but never judged.

A metric is WEAKER only when the evidence says so:
- Accuracies (protected, peak protected, and each defense's final and peak) are measurements with
  noise. Their per-seed values come from `poisons.NAME.replicates`; a report without replicates
  (older reports) counts as one replicate, the summary value. The report's values are tested one-sided
  for being higher than the baseline's: with >= 2 replicates on both sides by Welch's t (unequal
  variances); where Welch's t is undefined (each side's values all equal) by the exact permutation test
  on the difference of means; with one replicate on either side by the two-proportion z-test on the
  test-set counts (round(mean accuracy x dataset.n_test) of each report). The p-values of every judged
  accuracy of the check are adjusted together by Holm's step-down method (the check fails if any metric
  does: the chance of any false alarm stays at most alpha). WEAKER iff the adjusted p < alpha (default
  0.05) AND the difference of means (report - baseline) is more than the tolerance (default 0.02).
- Certified learnability (curves matched by eta_over_sigma) is an upper bound already: WEAKER iff the
  report's bound is higher by more than the tolerance (test "bound", no p-value); an eta certified in
  the baseline that abstains in the report fails.
Reports with different numbers of seeds compare, as do reports of other poison parameters or budgets.

The gate compares like with like: reports of different datasets (name, sizes, shape, classes), test
sets (dataset.test_digest, where both reports carry one), models (arch, parameter count) or profiles,
and certificates made with different draw counts, σ, q, α (the family-wise level: a certificate over
K replicates, each at α/K, compares with one of one replicate at α), coverage or surrogate recipe are
not comparable: UserError (exit 2), one line naming the field and both values. No empty comparison
passes: a baseline judging no poison is a UserError, a report holding none of the metrics the baseline
judges fails the check (exit 1; `CheckResult.problem` says why).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from certify.curves import close, point_at
from certify.errors import UserError
from certify.files import atomic_write
from certify.registry import CONTROL
from certify.report.schema import format_path
from certify.views import CheckResult

EPS = 1e-9  # float slack so that a delta of exactly the tolerance passes

# What two reports must share for their numbers to mean the same thing, and how to get there.
SAME_RUN = (
    ("dataset", ("name", "n_train", "n_test", "shape", "classes"), "run both on the same dataset"),
    ("model", ("arch", "parameters"), "run both with the same --model"),
    ("config", ("profile",), "run both with the same --profile"),
)
SAME_CERTIFICATE = ("sigma", "q", "alpha", "samples", "coverage", "surrogate", "surrogate_recipe")

OK, WEAKER, ABSTAINS, MISSING, NOT_JUDGED, NEW = "ok", "WEAKER", "ABSTAINS", "MISSING", "not judged", "new"
FAILING = (WEAKER, ABSTAINS, MISSING)
ABSENT = "absent"  # the report's cell where it lacks the poison or curve point
# the test behind a row's verdict (see the module docstring)
WELCH, PERMUTATION, TWO_PROPORTION, BOUND = "welch-t", "permutation", "two-proportion", "bound"


@dataclass
class Row:
    poison: str
    metric: str
    baseline: float | None | str  # an accuracy: the mean over the side's seeds; a certified value: the bound
    report: float | None | str
    verdict: str
    seeds: tuple[int | None, int | None] = (None, None)  # K of each side; None where that side lacks the metric
    p: float | None = None  # one-sided p of "the report's accuracy is higher"; None where nothing was tested
    test: str = "-"

    @property
    def delta(self) -> float | None:
        if isinstance(self.baseline, (int, float)) and isinstance(self.report, (int, float)):
            return self.report - self.baseline
        return None


class _Absent:
    """A field one report lacks: equal to no JSON value."""

    def __repr__(self) -> str:
        return "absent"


ABSENT_FIELD = _Absent()


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(a, b) -> bool:
    """Floats up to rounding; anything else (counts, strings, bools) exactly, type included."""
    if _is_number(a) and _is_number(b) and float in (type(a), type(b)):
        return close(a, b)
    return type(a) is type(b) and a == b


def _difference(a, b, path: list) -> tuple[list, object, object] | None:
    """(path, a, b) at the first place two JSON values differ, descending into objects (a list differs
    as a whole); None if they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = (_difference(a.get(k, ABSENT_FIELD), b.get(k, ABSENT_FIELD), path + [k]) for k in {**a, **b})
        return next((d for d in diffs if d is not None), None)
    if isinstance(a, list) and isinstance(b, list):
        same = len(a) == len(b) and all(_difference(x, y, path) is None for x, y in zip(a, b))
    else:
        same = _equal(a, b)
    return None if same else (path, a, b)


def _shown(value, limit: int = 80) -> str:
    text = repr(value)  # one line: repr escapes newlines
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse_if_different(subject: str, base, rep, path: list, remedy: str) -> None:
    diff = _difference(base, rep, path)
    if diff is not None:
        where, b, r = diff
        raise UserError(f"{subject} not comparable: {format_path(where)} is {_shown(b)} in the baseline but "
                        f"{_shown(r)} in the report ({remedy})")


def _picked(section: dict, fields) -> dict:
    return {f: section[f] for f in fields if f in section}


def _test_set_note(baseline: dict, report: dict) -> str | None:
    """Refuse different test sets by their digest; the table header's note when a report has none
    (older reports): then the dataset's name, n_test and shape, compared anyway, stand in."""
    digests = [doc["dataset"].get("test_digest") for doc in (baseline, report)]
    lacking = [who for who, d in zip(("baseline", "report"), digests) if d is None]
    if lacking:
        return (f"note: test-set digest not compared (no dataset.test_digest in the {' and '.join(lacking)}); "
                "test sets matched by dataset name, n_test and shape only")
    _refuse_if_different("reports", *digests, ["dataset", "test_digest"], "they were evaluated on different test sets")
    return None


def require_comparable(baseline: dict, report: dict) -> str | None:
    """Raise UserError unless the two reports compare like with like: the same dataset, test set, model,
    profile and, per poison certified in both, certificate settings. Returns the test-set note."""
    for section, fields, remedy in SAME_RUN:
        _refuse_if_different("reports", _picked(baseline[section], fields), _picked(report[section], fields),
                             [section], remedy)
    note = _test_set_note(baseline, report)
    for name, bsec in baseline["poisons"].items():
        bcert, rcert = bsec.get("certificate"), report["poisons"].get(name, {}).get("certificate")
        if bcert and rcert:
            _refuse_if_different("certificates", _picked(bcert, SAME_CERTIFICATE), _picked(rcert, SAME_CERTIFICATE),
                                 ["poisons", name, "certificate"], "certify both with the same --samples, --sigma, "
                                 "--q, --alpha, coverage and surrogate recipe")
    return note


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def welch_p(base_values: list[float], report_values: list[float]) -> float:
    """One-sided p of Welch's t-test that the report's mean is higher (>= 2 values a side, not both
    constant)."""
    from scipy import stats

    with warnings.catch_warnings():
        # One side's seeds agreeing exactly is valid input (its variance is 0, and Welch's t stays defined
        # by the other side's); scipy warns about it as if the data were merely nearly identical.
        warnings.filterwarnings("ignore", message="Precision loss", category=RuntimeWarning)
        result = stats.ttest_ind(report_values, base_values, equal_var=False, alternative="greater")
    return float(result.pvalue)


def permutation_p(base_values: list[float], report_values: list[float]) -> float:
    """Exact one-sided p of the permutation test on the difference of means (report - baseline) when
    each side's values are all equal, where Welch's t is undefined (scipy would answer p = 0 for any
    difference). It equals scipy.stats.permutation_test's exact value, in closed form because the
    C(n, k) splits are too many to enumerate at 20 seeds a side: only the observed split puts every
    higher value on the report's side, so p = 1 / C(n, k) when the report is higher, else 1 (every
    split is at least as extreme). Its smallest value bounds what few seeds can show: 3 vs 3 gives
    1/20 = 0.05, never below alpha 0.05."""
    if report_values[0] > base_values[0]:
        return 1 / math.comb(len(base_values) + len(report_values), len(report_values))
    return 1.0


def two_proportion_p(base_accuracy: float, report_accuracy: float, n_base: int, n_report: int) -> float:
    """One-sided p of the two-proportion z-test that the report's accuracy is higher, on the test-set
    counts round(accuracy x n_test). Where the pooled variance is 0 (both counts 0, or both all of
    their test set) or a side has no test images, the proportions are equal or unknown: no evidence, 1."""
    from statsmodels.stats.proportion import proportions_ztest

    counts = [round(report_accuracy * n_report), round(base_accuracy * n_base)]
    nobs = [n_report, n_base]
    if 0 in nobs or sum(counts) in (0, sum(nobs)):
        return 1.0
    return float(proportions_ztest(counts, nobs, alternative="larger")[1])


def judge_accuracy(base_values: list[float], report_values: list[float], n_base: int, n_report: int,
                   alpha: float, tolerance: float) -> tuple[str, float, str]:
    """(verdict, p, test) for one accuracy given each side's per-seed values and test-set size: WEAKER iff
    the report's values are higher with one-sided p < alpha and their mean exceeds the baseline's by
    more than the tolerance. With one seed on a side there is no seed variance to test against: the
    test-set counts' binomial noise is the evidence then."""
    if len(base_values) >= 2 and len(report_values) >= 2:
        constant = all(min(v) == max(v) for v in (base_values, report_values))
        p, test = (permutation_p(base_values, report_values), PERMUTATION) if constant \
            else (welch_p(base_values, report_values), WELCH)
    else:
        p = two_proportion_p(_mean(base_values), _mean(report_values), n_base, n_report)
        test = TWO_PROPORTION
    weaker = p < alpha and _mean(report_values) - _mean(base_values) > tolerance + EPS
    return (WEAKER if weaker else OK), p, test


def _lookup(doc, path: tuple[str, ...]):
    for key in path:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def _per_seed(sec: dict, summary: float, path: tuple[str, ...]) -> list[float]:
    """One metric's values over a poison's replicates; the summary value as the one replicate of a report
    without replicates (older reports) or whose replicates do not all carry the metric."""
    values = [_lookup(rep, path) for rep in sec.get("replicates") or []]
    return values if values and None not in values else [summary]


def crafting_model(doc: dict) -> str | None:
    """The architecture a report's poisons were crafted on, where it has a victim panel."""
    return (doc.get("victims") or {}).get("crafting_model")


def _accuracy_metrics(sec: dict | None, crafting: str | None = None) -> dict[str, list[float]]:
    """metric name -> per-seed values of the judged empirical accuracies of one poison section: the
    crafting model's, and each other victim's of the panel (trained normally and under each defense:
    the final accuracies the verdict judges), so a poison that no longer stops one of them fails."""
    if sec is None:
        return {}
    emp = sec["empirical"]
    where = {"protected_accuracy": (emp["protected_accuracy"], ("protected_accuracy",)),
             "peak_protected_accuracy": (emp["peak_protected_accuracy"], ("peak_protected_accuracy",))}
    for d, v in (emp.get("defenses") or {}).items():
        where[f"defense {d}: accuracy"] = (v["accuracy"], ("defenses", d))
        where[f"defense {d}: peak_accuracy"] = (v["peak_accuracy"], ("defenses_peak", d))
    for arch, v in (sec.get("victims") or {}).items():
        if arch == crafting:  # its numbers are `empirical`'s, above
            continue
        where[f"victim {arch}: protected_accuracy"] = (v["protected_accuracy"], ("victims", arch, "protected_accuracy"))
        for d, dv in (v.get("defenses") or {}).items():
            where[f"victim {arch} defense {d}: accuracy"] = (dv["accuracy"], ("victims", arch, "defenses", d))
    return {metric: _per_seed(sec, summary, path) for metric, (summary, path) in where.items()}


def _curve_label(pt: dict) -> str:
    return f"certified eta/sigma={pt['eta_over_sigma']:g}"


def _certificate_seeds(cert: dict) -> int:
    return cert.get("replicates", 1)  # older certificates: one replicate


def _accuracy_rows(name: str, bsec: dict, rsec: dict, n_base: int, n_report: int, alpha: float,
                   tolerance: float, crafting: tuple[str | None, str | None] = (None, None)) -> list[Row]:
    judged = name != CONTROL
    racc = _accuracy_metrics(rsec, crafting[1])
    rows = []
    for metric, bvals in _accuracy_metrics(bsec, crafting[0]).items():
        rvals = racc.get(metric)
        if rvals is None:
            rows.append(Row(name, metric, _mean(bvals), None, MISSING if judged else NOT_JUDGED, (len(bvals), None)))
            continue
        verdict, p, test = judge_accuracy(bvals, rvals, n_base, n_report, alpha, tolerance)
        rows.append(Row(name, metric, _mean(bvals), _mean(rvals), verdict if judged else NOT_JUDGED,
                        (len(bvals), len(rvals)), p, test))
    return rows


def _certified_rows(name: str, bcert: dict | None, rcert: dict | None, tolerance: float) -> list[Row]:
    """Certified values are bounds already: judged on the tolerance alone."""
    judged = name != CONTROL
    rows = []
    for bpt in (bcert or {}).get("curve", []):
        rpt = point_at((rcert or {}).get("curve"), bpt["eta_over_sigma"])
        bv, k_base = bpt["learnability"], _certificate_seeds(bcert)
        if rpt is None:
            rv, verdict, seeds, test = ABSENT, MISSING, (k_base, None), "-"
        else:
            rv, seeds, test = rpt["learnability"], (k_base, _certificate_seeds(rcert)), BOUND
            if bv is None:
                verdict = OK  # abstained in the baseline: nothing to get weaker than
            elif rv is None:
                verdict = ABSTAINS
            else:
                verdict = WEAKER if rv - bv > tolerance + EPS else OK
        if bv is None and rpt is None:
            verdict = OK
        rows.append(Row(name, _curve_label(bpt), bv, rv, verdict if judged else NOT_JUDGED, seeds, None, test))
    return rows


def _new_rows(name: str, rsec: dict, crafting: str | None) -> list[Row]:
    """A poison only the report has: shown, never judged."""
    rows = [Row(name, metric, None, _mean(rvals), NEW, (None, len(rvals)))
            for metric, rvals in _accuracy_metrics(rsec, crafting).items()]
    cert = rsec.get("certificate") or {}
    rows += [Row(name, _curve_label(pt), None, pt["learnability"], NEW, (None, _certificate_seeds(cert)))
             for pt in cert.get("curve", [])]
    return rows


def compare(baseline: dict, report: dict, tolerance: float, alpha: float = 0.05) -> list[Row]:
    """The table rows, in baseline order then poisons new in the report (see require_comparable first)."""
    bp, rp = baseline["poisons"], report["poisons"]
    n_base, n_report = baseline["dataset"]["n_test"], report["dataset"]["n_test"]
    crafting = (crafting_model(baseline), crafting_model(report))
    rows: list[Row] = []
    for name, bsec in bp.items():
        rsec = rp.get(name)
        if rsec is None:
            rows.append(Row(name, "poison", "present", ABSENT, MISSING if name != CONTROL else NOT_JUDGED))
            continue
        rows += _accuracy_rows(name, bsec, rsec, n_base, n_report, alpha, tolerance, crafting)
        rows += _certified_rows(name, bsec.get("certificate"), rsec.get("certificate"), tolerance)
    for name, rsec in rp.items():
        if name not in bp:
            rows += _new_rows(name, rsec, crafting[1])
    _holm(rows, alpha, tolerance)
    return rows


def _holm(rows: list[Row], alpha: float, tolerance: float) -> None:
    """Holm's step-down adjustment over every judged accuracy of the check, in place: a check fails if
    any of its metrics does, so each metric tested at alpha alone would raise false alarms far more
    often than alpha (measured: 6.9 % for two metrics of MI-UE at 3 vs 3 seeds, reports/BENCHMARKS.md).
    Holm keeps the chance of any false alarm in the whole check at most alpha."""
    from statsmodels.stats.multitest import multipletests

    tested = [r for r in rows if r.p is not None and r.verdict in (OK, WEAKER)]
    if not tested:
        return
    adjusted = multipletests([r.p for r in tested], alpha=alpha, method="holm")[1]
    for r, p in zip(tested, adjusted):
        r.p = float(p)
        r.verdict = WEAKER if p < alpha and r.delta > tolerance + EPS else OK


def _cell(v, certified: bool) -> str:
    if v is None:
        return "abstains" if certified else "-"
    if isinstance(v, str):
        return v
    return f"{v:.4f}"


COLUMNS = ("poison", "metric", "seeds", "baseline", "report", "delta", "p", "test", "verdict")


def _cells(r: Row) -> list[str]:
    """One row's cells, in COLUMNS order, for the table and the JUnit file alike."""
    cert = r.metric.startswith("certified")
    seeds = " vs ".join("-" if k is None else str(k) for k in r.seeds)
    base = "-" if (r.verdict == NEW) else _cell(r.baseline, cert)
    d = r.delta
    return [r.poison, r.metric, seeds, base, _cell(r.report, cert), "-" if d is None else f"{d:+.4f}",
            "-" if r.p is None else f"{r.p:.3g}", r.test, r.verdict]


def format_table(rows: list[Row]) -> str:
    body = [_cells(r) for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(COLUMNS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    return "\n".join(lines)


def rule_line(alpha: float, tolerance: float) -> str:
    return (f"rule: an accuracy is weaker when its one-sided p, Holm-adjusted over the check's accuracies, is < alpha "
            f"{alpha:g} and delta > tolerance {tolerance:g}; a certified bound when delta > tolerance {tolerance:g}")


def _xml_text(s: str) -> str:
    """Drop characters XML 1.0 cannot hold (ElementTree escapes <, >, & and quotes itself)."""
    return "".join(c for c in str(s) if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")
                   or ("\U00010000" <= c <= "\U0010ffff"))


def write_junit(rows: list[Row], path, tolerance: float, alpha: float = 0.05) -> None:
    import xml.etree.ElementTree as ET

    failures = sum(r.verdict in FAILING for r in rows)
    skipped = sum(r.verdict in (NOT_JUDGED, NEW) for r in rows)
    suite = ET.Element("testsuite", name="certify check", tests=str(len(rows)), failures=str(failures),
                       errors="0", skipped=str(skipped))
    for r in rows:
        tc = ET.SubElement(suite, "testcase", classname=_xml_text(f"certify.{r.poison}"), name=_xml_text(r.metric))
        cells = _cells(r)
        detail = (", ".join(f"{c} {v}" for c, v in zip(COLUMNS[2:-1], cells[2:-1]))
                  + f", alpha {alpha:g}, tolerance {tolerance:g}")
        if r.verdict in FAILING:
            el = ET.SubElement(tc, "failure", message=_xml_text(f"{r.verdict}: {detail}"), type=r.verdict)
            el.text = _xml_text(f"{r.poison} / {r.metric}: {r.verdict.lower()} ({detail})")
        elif r.verdict == NOT_JUDGED:
            ET.SubElement(tc, "skipped", message="clean control: shown, never judged")
        elif r.verdict == NEW:
            ET.SubElement(tc, "skipped", message="not in the baseline")
        # every row's numbers, passing ones included, where CI pages show a test case's output
        ET.SubElement(tc, "system-out").text = _xml_text(f"{detail}, verdict {r.verdict}")
    root = ET.Element("testsuites", name="certify check", tests=str(len(rows)), failures=str(failures))
    root.append(suite)
    tree = ET.ElementTree(root)
    p = Path(path)
    try:
        atomic_write(p, lambda tmp: tree.write(tmp, encoding="utf-8", xml_declaration=True))
    except OSError as e:
        raise UserError(f"--junit {p}: cannot write: {e.strerror or e}") from None


def _judged(baseline: dict) -> list[str]:
    return [name for name in baseline["poisons"] if name != CONTROL]


def _require_judged(baseline: dict, path) -> None:
    """A baseline with no poison besides the control would pass anything."""
    if not _judged(baseline):
        raise UserError(f"baseline judges nothing: {path} has no poison besides the clean control {CONTROL!r}")


def _compared_anything(rows: list[Row]) -> bool:
    """Whether the report holds any metric the baseline judges: all missing is no comparison at all."""
    return any(r.verdict in (OK, WEAKER, ABSTAINS) and r.report != ABSENT for r in rows)


def require_settings(tolerance, alpha) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise UserError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    # `not 0 < alpha < 1` also refuses NaN, which compares false with everything
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise UserError(f"--alpha must be a number strictly between 0 and 1, got {alpha!r}")


def as_dict(r: Row) -> dict:
    """One row for `certify --json check`."""
    return {"poison": r.poison, "metric": r.metric, "seeds": list(r.seeds), "baseline": r.baseline,
            "report": r.report, "delta": r.delta, "p": r.p, "test": r.test, "verdict": r.verdict}


def evaluate(baseline: dict, report: dict, labels: tuple[str, str], tolerance: float = 0.02,
             alpha: float = 0.05) -> CheckResult:
    """The check of two validated reports (`labels`: how the result names them). UserError unless
    the settings are sound (`require_settings`, checked by the caller before reading any file), the
    baseline judges a poison and the reports compare like with like."""
    _require_judged(baseline, labels[0])
    note = require_comparable(baseline, report)
    rows = compare(baseline, report, float(tolerance), float(alpha))
    problem = None if _compared_anything(rows) else (
        f"the report judges nothing the baseline judges: baseline poisons {_shown(_judged(baseline))}, "
        f"report poisons {_shown(list(report['poisons']))}")
    return CheckResult(labels[0], labels[1], tolerance, alpha, rows, note, problem)


def format_text(result: CheckResult) -> str:
    """The table `certify check` prints: heading, note, rule, rows and (unless the check compared
    nothing) the outcome."""
    lines = [f"certify check: baseline {result.baseline} against report {result.report} "
             f"(alpha {result.alpha:g}, tolerance {result.tolerance:g})"]
    if result.note:
        lines.append(result.note)
    lines += [rule_line(result.alpha, result.tolerance), format_table(result._rows)]
    failed = [r for r in result._rows if r.verdict in FAILING]
    if result.problem is None and failed:
        names = sorted({r.poison for r in failed})
        lines.append(f"FAILED: {len(failed)} metric(s) weaker, abstaining or missing for {', '.join(names)}")
    elif result.problem is None:
        lines.append(f"passed: {sum(r.verdict == OK for r in result._rows)} judged metric(s) not shown weaker")
    return "\n".join(lines)


def _escape(text: str, in_property: bool = False) -> str:
    """A workflow command's value: %, CR and LF always escaped, and ':' and ',' inside a property."""
    text = str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if in_property else text


def annotations(result: CheckResult) -> list[str]:
    """GitHub Actions error annotations: one per weaker, abstaining or missing metric, and one for a
    check that compared nothing."""
    lines = []
    for r in result._rows:
        if r.verdict in FAILING:
            cells = dict(zip(COLUMNS, _cells(r)))
            detail = ", ".join(f"{c} {cells[c]}" for c in COLUMNS[2:-1])
            lines.append(f"::error title={_escape(f'certify check: {r.poison} {r.metric}', True)}::"
                         f"{_escape(f'{r.verdict}: {r.poison} / {r.metric} ({detail})')}")
    if result.problem:
        lines.append(f"::error title={_escape('certify check', True)}::{_escape(result.problem)}")
    return lines
