"""What `certify.run`, `certify.audit`, `certify.plan` and `certify.check` return: read-only views
over report.json, plan.json and a check's rows.

A view holds the validated document as it was read and reads each value from it when asked: one
schema (certify/report/schema.py), no second copy of the numbers. What a view hands out (a dict, a
list) is a copy, so a notebook cannot change the report under it. This module imports nothing
heavy at import time: `import certify` stays cheap.
"""
from __future__ import annotations

import copy
from pathlib import Path
from collections.abc import Mapping
from types import MappingProxyType

from certify.errors import UserError

MAX_PLAN_BYTES = 16 * 2**20  # a plan of a dozen budgets over 20 seeds is well under 1 MB


def _document(path, name: str) -> Path:
    """`path` itself, or DIR/`name` where `path` is a directory (the --out of a run or plan)."""
    p = Path(path)
    return p / name if p.is_dir() else p


class _View:
    """A read-only window on one mapping of a document."""

    __slots__ = ("_data",)

    def __init__(self, data: dict):
        self._data = data

    def _get(self, key: str):
        """A copy of the value at `key`; None where the document lacks it."""
        return copy.deepcopy(self._data.get(key))

    def to_dict(self) -> dict:
        return copy.deepcopy(self._data)


class Verdict(_View):
    """A poison's verdict: `level` (strong, partial, weak or none) and the `reasons` for it."""

    __slots__ = ()

    @property
    def level(self) -> str:
        return self._data["level"]

    @property
    def reasons(self) -> list[str]:
        return list(self._data["reasons"])

    def __repr__(self) -> str:
        return f"Verdict({self.level!r}, reasons={self.reasons!r})"


class Certificate(_View):
    """A poison's certificate: the certified learnability `curve` (one dict per eta/sigma, its
    `learnability` None where the certificate abstains), made at weight noise `sigma`, quantile `q` and
    failure probability `alpha` from `samples` draws."""

    __slots__ = ()

    sigma = property(lambda self: self._data["sigma"])
    q = property(lambda self: self._data["q"])
    alpha = property(lambda self: self._data["alpha"])
    samples = property(lambda self: self._data["samples"])
    max_certified_eta = property(lambda self: self._data["max_certified_eta"])
    curve = property(lambda self: self._get("curve"))

    def learnability(self, eta_over_sigma: float) -> float | None:
        """The certified learnability at `eta_over_sigma` (None: abstains); KeyError off the curve."""
        from certify.curves import point_at

        point = point_at(self._data["curve"], eta_over_sigma)
        if point is None:
            raise KeyError(eta_over_sigma)
        return point["learnability"]

    def __repr__(self) -> str:
        return f"Certificate(sigma={self.sigma!r}, q={self.q!r}, alpha={self.alpha!r}, points={len(self._data['curve'])})"


SCORES = ("sal_ud", "mutual_information", "covariance")  # the report's score sections of a poison


class Poison(_View):
    """One poison's section of report.json. Sections a run skipped (`skip=["recovery"]`) or that an
    older report lacks read None."""

    __slots__ = ("_name",)

    def __init__(self, name: str, data: dict):
        super().__init__(data)
        self._name = name

    name = property(lambda self: self._name)
    budget = property(lambda self: self._get("budget"))
    clean_accuracy = property(lambda self: self._data["empirical"]["clean_accuracy"])
    protected_accuracy = property(lambda self: self._data["empirical"]["protected_accuracy"])
    peak_protected_accuracy = property(lambda self: self._data["empirical"]["peak_protected_accuracy"])
    # [low, high] at 95 %; None in reports from before replicate seeds
    protected_interval = property(lambda self: copy.deepcopy(self._data["empirical"].get("protected_interval")))
    recovery = property(lambda self: self._get("recovery"))
    victims = property(lambda self: self._get("victims"))
    replicates = property(lambda self: self._get("replicates"))

    @property
    def defenses(self) -> dict[str, dict]:
        """Defense name -> its `accuracy`, `peak_accuracy` (and intervals); {} where none ran."""
        return copy.deepcopy(self._data["empirical"].get("defenses") or {})

    @property
    def certificate(self) -> Certificate | None:
        cert = self._data.get("certificate")
        return Certificate(cert) if cert else None

    @property
    def scores(self) -> dict | None:
        """The score sections present (`sal_ud`, `mutual_information`, `covariance`); None: scores skipped."""
        present = {k: copy.deepcopy(self._data[k]) for k in SCORES if k in self._data}
        return present or None

    @property
    def verdict(self) -> Verdict | None:
        v = self._data.get("verdict")
        return Verdict(v) if v else None

    def __repr__(self) -> str:
        return (f"Poison({self.name!r}, clean_accuracy={self.clean_accuracy:.4f}, "
                f"protected_accuracy={self.protected_accuracy:.4f})")


class Report:
    """A report.json, validated against its schema (certify/report/schema.py).

        >>> report = certify.Report.load("reports/runs/my-run")       # the directory or its report.json
        >>> report.poisons["miue"].protected_accuracy
        >>> report.verdict("miue").level                              # 'strong', 'partial', 'weak' or 'none'
        >>> pandas.DataFrame(report.table())                          # one plain dict per poison
    """

    __slots__ = ("_doc", "_path", "_poisons")

    def __init__(self, doc: dict, path: Path | None = None):
        """`doc` a report dict already validated (`Report.load` is the way to read one)."""
        self._doc = doc
        self._path = path
        self._poisons = MappingProxyType({name: Poison(name, sec) for name, sec in doc["poisons"].items()})

    @classmethod
    def load(cls, path) -> Report:
        """Read report.json (or DIR/report.json); UserError, one line, unless it is a valid report."""
        from certify.report import load_report

        p = _document(path, "report.json")
        return cls(load_report(p), p)

    @property
    def path(self) -> Path | None:
        """The report.json read; None for a report built from a dict."""
        return self._path

    @property
    def seeds(self) -> list[int]:
        """The run's replicate seeds ([seed] alone in reports from before replicates)."""
        return list(self._doc.get("seeds") or [self._doc["seed"]])

    @property
    def poisons(self) -> Mapping[str, Poison]:
        """Poison name -> its view, in the report's order (the clean control `none` first where run)."""
        return self._poisons

    def verdict(self, name: str) -> Verdict | None:
        """The verdict of poison `name` (None in a report without verdicts); KeyError for an absent poison."""
        return self._poisons[name].verdict

    def to_dict(self) -> dict:
        """The report as report.json holds it."""
        return copy.deepcopy(self._doc)

    def table(self) -> list[dict]:
        """One plain dict per poison (for a notebook: `pandas.DataFrame(report.table())`): its verdict,
        accuracies, 95 % interval, the attacker's best defense and the certified learnability at each
        eta/sigma of the curve (None: no certificate, or it abstains there)."""
        rows = []
        for name, p in self._poisons.items():
            defenses = {d: v["accuracy"] for d, v in p.defenses.items()}
            best = max(defenses, key=defenses.get) if defenses else None
            cert = p.certificate
            rows.append({
                "poison": name, "verdict": p.verdict.level if p.verdict else None,
                "clean_accuracy": p.clean_accuracy, "protected_accuracy": p.protected_accuracy,
                "protected_interval": p.protected_interval, "seeds": self._doc["poisons"][name]["empirical"].get("seeds"),
                "best_defense": best, "defended_accuracy": defenses[best] if best else None,
                "sigma": cert.sigma if cert else None,
                "certified": {str(pt["eta_over_sigma"]): pt["learnability"] for pt in cert.curve} if cert else None})
        return rows

    def __repr__(self) -> str:
        return f"Report({str(self._path) if self._path else 'unsaved'!r}, poisons={list(self._poisons)})"


class Plan:
    """A plan.json: the budgets `certify.plan` tried and the one it recommends.

        >>> plan = certify.Plan.load("reports/plans/my-plan")
        >>> plan.recommended                 # the smallest budget meeting the targets, or None
        >>> [row["protected_accuracy"] for row in plan.rows]
    """

    __slots__ = ("_doc", "_path")

    def __init__(self, doc: dict, path: Path | None = None):
        self._doc = doc
        self._path = path

    @classmethod
    def load(cls, path) -> Plan:
        """Read plan.json (or DIR/plan.json); UserError, one line, unless it is a plan of this tool."""
        from certify.files import read_json
        from certify.report.schema import PLAN_SCHEMA_ID

        p = _document(path, "plan.json")
        doc = read_json(p, MAX_PLAN_BYTES, "plan")
        if not isinstance(doc, dict) or doc.get("schema") != PLAN_SCHEMA_ID or not isinstance(doc.get("budgets"), list):
            raise UserError(f"{p}: not a ue-certify plan (expected schema {PLAN_SCHEMA_ID!r} and its budgets)")
        return cls(doc, p)

    path = property(lambda self: self._path)
    poison = property(lambda self: self._doc["poison"])
    recommended = property(lambda self: self._doc["recommended"])

    @property
    def rows(self) -> list[dict]:
        """One dict per budget tried, as plan.json holds it."""
        return copy.deepcopy(self._doc["budgets"])

    @property
    def budgets(self) -> list[str]:
        """The budget labels tried, e.g. ['4/255', '8/255']."""
        return [row["budget"] for row in self._doc["budgets"]]

    def to_dict(self) -> dict:
        return copy.deepcopy(self._doc)

    def __repr__(self) -> str:
        return f"Plan({self.poison!r}, budgets={self.budgets}, recommended={self.recommended!r})"


class CheckResult:
    """The answer of `certify.check`: `passed`, `exit_code` (0 or 1, as `certify check` exits) and
    `rows`, one dict per compared metric (poison, metric, baseline, report, delta, p, test, verdict).
    `problem` says why a check failed without a weaker metric (the report judges nothing the baseline
    judges); `note` is the table's note. Built by certify.gate."""

    __slots__ = ("baseline", "report", "tolerance", "alpha", "note", "problem", "_rows")

    def __init__(self, baseline: str, report: str, tolerance: float, alpha: float, rows: list, note: str | None,
                 problem: str | None):
        self.baseline, self.report, self.tolerance, self.alpha = baseline, report, tolerance, alpha
        self.note, self.problem, self._rows = note, problem, rows

    @property
    def rows(self) -> list[dict]:
        from certify.gate import as_dict

        return [as_dict(r) for r in self._rows]

    @property
    def failures(self) -> list[dict]:
        """The rows that fail the check: weaker, abstaining or missing."""
        from certify.gate import FAILING

        return [row for row in self.rows if row["verdict"] in FAILING]

    @property
    def passed(self) -> bool:
        return self.problem is None and not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        """What `certify --json check` prints."""
        from certify.gate import rule_line

        return {"baseline": self.baseline, "report": self.report, "alpha": self.alpha, "tolerance": self.tolerance,
                "rule": rule_line(self.alpha, self.tolerance), "note": self.note,
                "result": "passed" if self.passed else "failed", "rows": self.rows}

    def text(self) -> str:
        """The table `certify check` prints, with its heading and its last line."""
        from certify.gate import format_text

        return format_text(self)

    def write_junit(self, path) -> None:
        """A JUnit XML file of the rows (one test case per metric), as `--junit` writes."""
        from certify.gate import write_junit

        write_junit(self._rows, path, self.tolerance, self.alpha)

    def annotations(self) -> list[str]:
        """GitHub Actions workflow commands (`::error title=...::...`), one per failing row."""
        from certify.gate import annotations

        return annotations(self)

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed}, rows={len(self._rows)}, failures={len(self.failures)})"
