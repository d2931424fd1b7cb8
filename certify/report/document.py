"""The report as a format-free document: what report.md and report.html both say.

`certify.report.content.build_document` makes one from a report dict; `certify.report.markdown` and
`certify.report.html` only render it, each escaping every string for its own format. All text is plain
and unescaped; numbers are already written out, so both formats show the same digits.

A document is a `Section` (its title is the report's title) whose children are blocks, nested
sections among them; `walk` gives the renderers every block in order, with the depth of its section
(the heading level).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """Text shown literally (a name, a command)."""
    text: str


@dataclass(frozen=True)
class Strong:
    text: str


Inline = str | Code | Strong


@dataclass(frozen=True)
class Paragraph:
    parts: list[Inline]


@dataclass(frozen=True)
class Bullets:
    items: list[list[Inline]]


@dataclass(frozen=True)
class Preformatted:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    filename: str  # a file under figures/
    caption: str


@dataclass(frozen=True)
class Section:
    title: str
    children: list[Block]


Block = Paragraph | Bullets | Preformatted | Table | Figure | Section


def walk(section: Section, level: int = 1) -> Iterator[tuple[int, Block]]:
    """(level, block) in reading order: a section at its depth, then its children (the renderers' one walk)."""
    yield level, section
    for block in section.children:
        if isinstance(block, Section):
            yield from walk(block, level + 1)
        else:
            yield level, block
