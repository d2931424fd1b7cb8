"""report.html: renders the format-free document of `certify.report.content` as one self-contained page.

Figures are embedded as data URIs; every string that reaches the page goes through html.escape.
"""
from __future__ import annotations

import base64
import html

from certify.report.content import build_document
from certify.report.document import Block, Bullets, Code, Figure, Paragraph, Preformatted, Section, Strong, Table, walk

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 70rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.5rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #eee; }
h3 { font-size: 1.05rem; margin-top: 1.2rem; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: .6rem 0;
              scrollbar-width: thin; scrollbar-color: #999 #eee; }
/* a scrollbar always drawn (not an overlay that shows only while scrolling): a table cut at the column's
   edge shows that it goes on */
.table-wrap::-webkit-scrollbar { height: 8px; }
.table-wrap::-webkit-scrollbar-thumb { background: #999; border-radius: 4px; }
.table-wrap::-webkit-scrollbar-track { background: #eee; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .55rem; text-align: left; }
th { background: #f4f4f4; }
tr:nth-child(even) td { background: #fafafa; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
code { background: #f6f8fa; padding: 0 .2rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _inline(parts) -> str:
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append(f"<code>{_e(part.text)}</code>")
        elif isinstance(part, Strong):
            out.append(f"<strong>{_e(part.text)}</strong>")
        else:
            out.append(_e(part))
    return "".join(out)


def _table(t: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in t.header)
    rows = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    # a table wider than the text column (the comparison table) scrolls inside its own box
    return (f'<div class="table-wrap"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n'
            "</table></div>")


def _figure(f: Figure, figures: dict[str, bytes]) -> str:
    data = figures.get(f.filename)
    if data is None:
        return f"<p><em>Figure {_e(f.filename)} is not available.</em></p>"
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{_e(f.caption)}"><figcaption>{_e(f.caption)}</figcaption></figure>'


def _block(level: int, b: Block, figures: dict[str, bytes]) -> str:
    if isinstance(b, Section):
        return f"<h{level}>{_e(b.title)}</h{level}>"
    if isinstance(b, Paragraph):
        return f"<p>{_inline(b.parts)}</p>"
    if isinstance(b, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_inline(item)}</li>" for item in b.items) + "\n</ul>"
    if isinstance(b, Preformatted):
        return f"<pre><code>{_e(b.text)}</code></pre>"
    if isinstance(b, Table):
        return _table(b)
    return _figure(b, figures)


def render_html(doc: Section, figures: dict[str, bytes]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(_block(level, b, figures) for level, b in walk(doc)) + "\n</body>\n</html>\n")


def build_html(report: dict, figures: dict[str, bytes]) -> str:
    """The HTML page; `figures` maps figures/NAME.png file names to their PNG bytes."""
    return render_html(build_document(report), figures)
