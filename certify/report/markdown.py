"""report.md: renders the format-free document of `certify.report.content` as Markdown.

Every string is escaped (or fenced as code), so text from the report cannot add Markdown of its own.
"""
from __future__ import annotations

from typing import Any

from certify.report.content import build_document
from certify.report.document import Block, Bullets, Code, Paragraph, Preformatted, Section, Strong, Table, walk

_MD_SPECIAL = set("\\`*_[]<>|#&!")


def md_escape(text: Any) -> str:
    s = " ".join(str(text).splitlines())
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in s)


def _longest_backtick_run(s: str) -> int:
    longest = run = 0
    for c in s:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    return longest


def md_code(text: Any) -> str:
    s = " ".join(str(text).splitlines())
    fence = "`" * (_longest_backtick_run(s) + 1)
    pad = " " if (s.startswith("`") or s.endswith("`") or not s.strip()) else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _inline(parts) -> str:
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append(md_code(part.text))
        elif isinstance(part, Strong):
            out.append(f"**{md_escape(part.text)}**")
        else:
            out.append(md_escape(part))
    return "".join(out)


def _code_block(text: str) -> str:
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}\n{text}\n{fence}"


def _table(t: Table) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in t.header) + " |",
             "|" + "|".join(" --- " for _ in t.header) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def _block(level: int, b: Block) -> str:
    if isinstance(b, Section):
        return "#" * level + " " + md_escape(b.title)
    if isinstance(b, Paragraph):
        return _inline(b.parts)
    if isinstance(b, Bullets):
        return "\n".join("- " + _inline(item) for item in b.items)
    if isinstance(b, Preformatted):
        return _code_block(b.text)
    if isinstance(b, Table):
        return _table(b)
    return f"![{md_escape(b.caption)}](figures/{b.filename})"  # a Figure


def render_markdown(doc: Section) -> str:
    return "\n\n".join(_block(level, b) for level, b in walk(doc)) + "\n"


def build_markdown(report: dict) -> str:
    return render_markdown(build_document(report))
