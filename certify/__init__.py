"""ue-certify: certification and robustness evaluation of unlearnable examples, from Python.

    >>> import certify
    >>> report = certify.run(poisons=["miue", "em"], dataset="digits", executor="serial")
    >>> report.verdict("miue").level, report.poisons["em"].protected_accuracy
    >>> certify.check("reports/baseline/digits-gate/report.json", report).passed

`run`, `audit`, `plan` and `check` are the CLI's commands (`help(certify.run)`); they return a
`Report`, a `Plan` and a `CheckResult`, read-only views of what they wrote. Bad input raises
`UserError` with the CLI's one-line message. Importing this package loads neither torch nor Ray.
"""
from certify.api import audit, check, plan, run
from certify.errors import UserError
from certify.views import CheckResult, Plan, Report

__all__ = ["run", "audit", "plan", "check", "Report", "Plan", "CheckResult", "UserError"]
