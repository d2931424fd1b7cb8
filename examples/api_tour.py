"""A tour of the Python API: run two poisons, read the verdicts, load the report again and check it
against itself, as a notebook would.

    python examples/api_tour.py [OUT]        # a small run on digits (a few minutes on a laptop CPU)

`tour(out, **options)` takes `certify.run`'s options on top of the tour's own (the tests pass a
smaller configuration).
"""
from __future__ import annotations

import sys

import certify


def tour(out: str, **options) -> certify.CheckResult:
    settings = {"poisons": ["random", "ops"], "dataset": "digits", "samples": 200, "skip": ["scores", "recovery"],
                "executor": "serial", **options}
    report = certify.run(out=out, **settings)

    for row in report.table():  # one plain dict per poison: pandas.DataFrame(report.table()) in a notebook
        print(f"{row['poison']:<8} protected {row['protected_accuracy']:.3f} (clean {row['clean_accuracy']:.3f}), "
              f"verdict {row['verdict']}")
    for name in settings["poisons"]:
        verdict = report.verdict(name)
        print(f"{name}: {verdict.level} because {'; '.join(verdict.reasons)}")
    cert = report.poisons["random"].certificate
    print(f"random's certificate: sigma {cert.sigma:.4g}, q {cert.q}, alpha {cert.alpha}, "
          f"{len(cert.curve)} points on its curve")

    again = certify.Report.load(out)  # the run's directory, or its report.json
    assert again.to_dict() == report.to_dict()
    result = certify.check(again, report)  # a report checked against itself passes
    print(f"check against itself: {'passed' if result.passed else 'failed'} over {len(result.rows)} metrics")
    return result


if __name__ == "__main__":
    try:
        sys.exit(tour(sys.argv[1] if len(sys.argv) > 1 else "reports/runs/api-tour").exit_code)
    except certify.UserError as e:  # bad input: the CLI's one line
        sys.exit(f"api_tour: {e}")
