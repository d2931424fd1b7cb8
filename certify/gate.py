"""`certify check BASELINE.json REPORT.json [--tolerance F] [--junit FILE]`: the CI gate.

Exit 1 if any poison present in the baseline got weaker in the report: its protected accuracy, peak
protected accuracy, any defended accuracy (final or peak) or certified learnability at any η (curves
matched by eta_over_sigma) is higher by more than the tolerance; an η certified in the baseline
abstains in the report; or the poison, or a judged metric of it, is missing from the report. Exit 0
otherwise. A table is printed either way. The clean control `none` is shown but never judged.

The gate compares like with like: reports of different datasets (name, sizes, shape, classes), test
sets (dataset.test_digest, where both reports carry one), models (arch, parameter count) or profiles,
and certificates made with different draw counts, σ, q, α, coverage or surrogate recipe are not
comparable: UserError (exit 2), one line naming the field and both values. No empty comparison
passes: a baseline judging no poison is a UserError, a report holding none of the metrics the baseline
judges is CheckFailed (exit 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from certify.curves import close, point_at
from certify.errors import CheckFailed, UserError
from certify.report import load_report
from certify.report.schema import format_path

CONTROL = "none"
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


@dataclass
class Row:
    poison: str
    metric: str
    baseline: float | None | str
    report: float | None | str
    verdict: str

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


def _judge(base_v, rep_v, tolerance: float) -> str:
    if rep_v is None:
        return MISSING
    return WEAKER if rep_v - base_v > tolerance + EPS else OK


def _accuracy_metrics(sec: dict | None) -> dict[str, float]:
    """metric name -> value for the judged empirical accuracies of one poison section."""
    if sec is None:
        return {}
    emp = sec["empirical"]
    out = {"protected_accuracy": emp["protected_accuracy"], "peak_protected_accuracy": emp["peak_protected_accuracy"]}
    for d, v in (emp.get("defenses") or {}).items():
        out[f"defense {d}: accuracy"] = v["accuracy"]
        out[f"defense {d}: peak_accuracy"] = v["peak_accuracy"]
    return out


def _curve_label(pt: dict) -> str:
    return f"certified eta/sigma={pt['eta_over_sigma']:g}"


def compare(baseline: dict, report: dict, tolerance: float) -> list[Row]:
    """The table rows, in baseline order then poisons new in the report (see require_comparable first)."""
    bp, rp = baseline["poisons"], report["poisons"]
    rows: list[Row] = []
    for name, bsec in bp.items():
        judged = name != CONTROL
        rsec = rp.get(name)
        if rsec is None:
            rows.append(Row(name, "poison", "present", ABSENT, MISSING if judged else NOT_JUDGED))
            continue
        racc = _accuracy_metrics(rsec)
        for metric, bv in _accuracy_metrics(bsec).items():
            rv = racc.get(metric)
            rows.append(Row(name, metric, bv, rv, _judge(bv, rv, tolerance) if judged else NOT_JUDGED))
        bcert, rcert = bsec.get("certificate"), rsec.get("certificate")
        for bpt in (bcert or {}).get("curve", []):
            rpt = point_at((rcert or {}).get("curve"), bpt["eta_over_sigma"])
            bv = bpt["learnability"]
            if rpt is None:
                rv, verdict = ABSENT, MISSING
            else:
                rv = rpt["learnability"]
                if bv is None:
                    verdict = OK  # abstained in the baseline: nothing to get weaker than
                elif rv is None:
                    verdict = ABSTAINS
                else:
                    verdict = WEAKER if rv - bv > tolerance + EPS else OK
            if bv is None and rpt is None:
                verdict = OK
            rows.append(Row(name, _curve_label(bpt), bv, rv, verdict if judged else NOT_JUDGED))
    for name, rsec in rp.items():
        if name in bp:
            continue
        for metric, rv in _accuracy_metrics(rsec).items():
            rows.append(Row(name, metric, None, rv, NEW))
        for pt in (rsec.get("certificate") or {}).get("curve", []):
            rows.append(Row(name, _curve_label(pt), None, pt["learnability"], NEW))
    return rows


def _cell(v, certified: bool) -> str:
    if v is None:
        return "abstains" if certified else "-"
    if isinstance(v, str):
        return v
    return f"{v:.4f}"


def format_table(rows: list[Row]) -> str:
    header = ["poison", "metric", "baseline", "report", "delta", "verdict"]
    body = []
    for r in rows:
        cert = r.metric.startswith("certified")
        base = "-" if (r.verdict == NEW) else _cell(r.baseline, cert)
        d = r.delta
        body.append([r.poison, r.metric, base, _cell(r.report, cert), "-" if d is None else f"{d:+.4f}", r.verdict])
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    return "\n".join(lines)


def _xml_text(s: str) -> str:
    """Drop characters XML 1.0 cannot hold (ElementTree escapes <, >, & and quotes itself)."""
    return "".join(c for c in str(s) if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")
                   or ("\U00010000" <= c <= "\U0010ffff"))


def write_junit(rows: list[Row], path, tolerance: float) -> None:
    import xml.etree.ElementTree as ET

    from certify.cache import atomic_write

    failures = sum(r.verdict in FAILING for r in rows)
    skipped = sum(r.verdict in (NOT_JUDGED, NEW) for r in rows)
    suite = ET.Element("testsuite", name="certify check", tests=str(len(rows)), failures=str(failures),
                       errors="0", skipped=str(skipped))
    for r in rows:
        tc = ET.SubElement(suite, "testcase", classname=_xml_text(f"certify.{r.poison}"), name=_xml_text(r.metric))
        cert = r.metric.startswith("certified")
        detail = (f"baseline {_cell(r.baseline, cert)}, report {_cell(r.report, cert)}"
                  + ("" if r.delta is None else f", delta {r.delta:+.4f}") + f", tolerance {tolerance:g}")
        if r.verdict in FAILING:
            el = ET.SubElement(tc, "failure", message=_xml_text(f"{r.verdict}: {detail}"), type=r.verdict)
            el.text = _xml_text(f"{r.poison} / {r.metric}: {r.verdict.lower()} ({detail})")
        elif r.verdict == NOT_JUDGED:
            ET.SubElement(tc, "skipped", message="clean control: shown, never judged")
        elif r.verdict == NEW:
            ET.SubElement(tc, "skipped", message="not in the baseline")
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


def check(baseline_path, report_path, tolerance: float = 0.02, junit=None) -> int:
    """Print the comparison table; return 1 if any judged poison got weaker or went missing, else 0.
    CheckFailed (exit 1) if the report holds nothing the baseline judges."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise UserError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    baseline = load_report(baseline_path)
    report = load_report(report_path)
    _require_judged(baseline, baseline_path)
    note = require_comparable(baseline, report)
    rows = compare(baseline, report, float(tolerance))
    print(f"certify check: baseline {baseline_path} against report {report_path} (tolerance {tolerance:g})")
    if note:
        print(note)
    print(format_table(rows))
    failed = [r for r in rows if r.verdict in FAILING]
    if junit:
        write_junit(rows, junit, float(tolerance))
    if not _compared_anything(rows):
        raise CheckFailed(f"the report judges nothing the baseline judges: baseline poisons "
                          f"{_shown(_judged(baseline))}, report poisons {_shown(list(report['poisons']))}")
    if failed:
        names = sorted({r.poison for r in failed})
        print(f"FAILED: {len(failed)} metric(s) weaker, abstaining or missing for {', '.join(names)}")
        return 1
    judged = sum(r.verdict == OK for r in rows)
    print(f"passed: {judged} judged metric(s) within tolerance")
    return 0
