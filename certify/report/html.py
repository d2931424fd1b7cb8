"""report.html: self-contained (figures embedded as data URIs), built from the report dict alone.

It renders the same blocks as report.md (`certify.report.markdown.build_blocks`); every string that
reaches the page goes through html.escape.
"""
from __future__ import annotations

import base64
import html

from certify.report.markdown import build_blocks

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 70rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.5rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #eee; }
h3 { font-size: 1.05rem; margin-top: 1.2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
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


def _segments(segs) -> str:
    out = []
    for seg in segs:
        if isinstance(seg, str):
            out.append(_e(seg))
        elif seg[0] == "code":
            out.append(f"<code>{_e(seg[1])}</code>")
        else:
            out.append(f"<strong>{_e(seg[1])}</strong>")
    return "".join(out)


def render_html(blocks: list, figures: dict[str, bytes], title: str) -> str:
    body = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            level = min(max(int(b[1]), 1), 6)
            body.append(f"<h{level}>{_e(b[2])}</h{level}>")
        elif kind == "p":
            body.append(f"<p>{_segments(b[1])}</p>")
        elif kind == "ul":
            body.append("<ul>\n" + "\n".join(f"<li>{_segments(item)}</li>" for item in b[1]) + "\n</ul>")
        elif kind == "code":
            body.append(f"<pre><code>{_e(b[1])}</code></pre>")
        elif kind == "table":
            head = "".join(f"<th>{_e(h)}</th>" for h in b[1])
            rows = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>")
        elif kind == "fig":
            data = figures.get(b[1])
            if data is None:
                body.append(f"<p><em>Figure {_e(b[1])} is not available.</em></p>")
                continue
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            body.append(f'<figure><img src="{uri}" alt="{_e(b[2])}">'
                        f"<figcaption>{_e(b[2])}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def build_html(report: dict, figures: dict[str, bytes]) -> str:
    """The HTML page; `figures` maps figures/NAME.png file names to their PNG bytes."""
    blocks = build_blocks(report)
    title = next((b[2] for b in blocks if b[0] == "h" and b[1] == 1), "certification report")
    return render_html(blocks, figures, title)
