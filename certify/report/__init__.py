"""The report directory: report.json (schema ue-certify/report/v1), figures/*.png, report.md, report.html.

    write_report(report, out_dir)   validate, then write report.json and render everything from it
    render(report_json_path)        `certify report REPORT.json`: re-render md/html/figures from the JSON
    load_report(path)               read and validate a report.json (UserError, one line, otherwise)

Markdown, HTML and figures are built from the JSON document alone (write_report renders from the
JSON round trip of the dict it was given), so `render` reproduces them exactly. The one exception
is each poison's sample grid (figures/samples-<poison>.png), drawn from pixels at run time and
given to write_report as `pictures`: `render` keeps and embeds the file it finds there.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from certify.errors import UserError
from certify.files import atomic_write, read_json
from certify.report.schema import SCHEMA_ID, format_path, validate_report

__all__ = ["write_report", "render", "load_report", "validate_report", "SCHEMA_ID"]


def _plain(value: Any, path: list) -> Any:
    """Plain JSON values: numpy scalars/arrays (and anything with .tolist()) and tuples converted."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserError(f"report: {format_path(path)}: must be a finite number, got {value!r}")
        return float(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UserError(f"report: {format_path(path)}: keys must be strings, got {k!r}")
            out[k] = _plain(v, path + [k])
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, path + [i]) for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalar or array, torch tensor
        return _plain(value.tolist(), path)
    raise UserError(f"report: {format_path(path)}: a {type(value).__name__} cannot be written to JSON")


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _render_into(doc: dict, out: Path) -> None:
    from certify.report import figures, html, markdown

    figs = figures.render_all(doc)
    try:
        for name, data in figs.items():
            _write_bytes(out / "figures" / name, data)
        for spec in figures.plan(doc):  # the run-time figures already there, for the self-contained HTML
            path = out / "figures" / spec.filename
            if spec.kind in figures.RUN_TIME and path.is_file():
                figs[spec.filename] = path.read_bytes()
        _write_text(out / "report.md", markdown.build_markdown(doc))
        _write_text(out / "report.html", html.build_html(doc, figs))
    except OSError as e:
        raise UserError(f"report directory {out}: cannot write: {e.strerror or e}") from None


def write_report(report: dict, out_dir, pictures: dict[str, bytes] | None = None) -> None:
    """Validate `report`, write out_dir/report.json atomically, then figures/*.png, report.md, report.html.
    `pictures` (file name -> PNG bytes) are the run-time figures, written into figures/ as they are."""
    doc = _plain(report, [])
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    doc = json.loads(text)  # render from exactly what the JSON holds, as `certify report` will
    validate_report(doc)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_text(out / "report.json", text)
        for name, data in (pictures or {}).items():
            _write_bytes(out / "figures" / name, data)
    except OSError as e:
        raise UserError(f"report directory {out}: cannot write: {e.strerror or e}") from None
    _render_into(doc, out)


MAX_REPORT_BYTES = 64 * 2**20  # a 20-seed report of every poison is a few MB


def load_report(path) -> dict:
    """The validated report dict from a report.json; UserError (one line) naming the file otherwise."""
    p = Path(path)
    doc = read_json(p, MAX_REPORT_BYTES, "report")
    if not isinstance(doc, dict) or "schema" not in doc:
        raise UserError(f"{p}: not a ue-certify report (no \"schema\" field; expected {SCHEMA_ID!r})")
    validate_report(doc, where=str(p))
    return doc


def render(report_json_path) -> None:
    """Re-render report.md, report.html and figures/*.png beside REPORT.json from the JSON alone."""
    p = Path(report_json_path)
    doc = load_report(p)
    _render_into(doc, p.parent)
