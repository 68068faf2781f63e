"""The report as a list of blocks (headings, paragraphs, lists, tables, figures), rendered to Markdown and HTML.

The content is built once and rendered to both formats, so the two never disagree.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import quote

__all__ = ["Heading", "Paragraph", "Bullets", "Cell", "Table", "Figure", "FigureRow", "Block", "Inline",
           "render_markdown", "render_html"]


Inline = str | list  # a string, or a list of str and (style, text) pairs with style "b", "i" or "code"


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    content: Inline
    kind: str = "text"  # "text", "note", "warning", "verdict"


@dataclass
class Bullets:
    items: list[Inline]


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell | str]]
    caption: str | None = None
    numeric: Sequence[int] = ()  # indices of right-aligned (number) columns


@dataclass
class Figure:
    path: str  # relative to the report folder
    caption: str


@dataclass
class FigureRow:
    figures: list[Figure]
    caption: str | None = None


Block = Heading | Paragraph | Bullets | Table | Figure | FigureRow

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def _spans(content: Inline) -> list[tuple[str, str]]:
    if isinstance(content, str):
        return [("", content)]
    return [("", part) if isinstance(part, str) else (part[0], part[1]) for part in content]


def _md_inline(content: Inline) -> str:
    out = []
    for style, text in _spans(content):
        if style == "code":
            ticks = "``" if "`" in text else "`"
            out.append(f"{ticks}{text}{ticks}")
        elif style == "b":
            out.append(f"**{_md_escape(text)}**")
        elif style == "i":
            out.append(f"*{_md_escape(text)}*")
        elif style == "link":  # a file next to the report, named by its own path
            out.append(f"[{_md_escape(text)}]({text})")
        else:
            out.append(_md_escape(text))
    return "".join(out)


def _html_inline(content: Inline) -> str:
    tags = {"code": "code", "b": "strong", "i": "em"}
    out = []
    for style, text in _spans(content):
        escaped = html.escape(str(text))
        if style == "link":
            out.append(f'<a href="{escaped}">{escaped}</a>')
        else:
            out.append(f"<{tags[style]}>{escaped}</{tags[style]}>" if style in tags else escaped)
    return "".join(out)


def _cell(c: Cell | str) -> Cell:
    return c if isinstance(c, Cell) else Cell(str(c))


def _md_table(block: Table) -> list[str]:
    lines = [f"*{_md_escape(block.caption)}*", ""] if block.caption else []
    lines.append("| " + " | ".join(_md_escape(h) for h in block.header) + " |")
    lines.append("|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.header))) + "|")
    for r in block.rows:
        cells = [_cell(c) for c in r]
        lines.append("| " + " | ".join(f"**{_md_escape(c.text)}**" if c.bold else _md_escape(c.text) for c in cells) + " |")
    return lines + [""]


def _md_figures(figures: list[Figure], caption: str) -> list[str]:
    return [" ".join(f"![{_md_escape(f.caption)}]({f.path})" for f in figures), "", f"*{_md_escape(caption)}*", ""]


_MD_PREFIX = {"note": "> **Note.** ", "warning": "> **⚠ Warning.** ", "verdict": "> "}
_MARKDOWN: dict[type, Callable[[Block], list[str]]] = {
    Heading: lambda b: ["#" * b.level + " " + _md_escape(b.text), ""],
    Paragraph: lambda b: [_MD_PREFIX.get(b.kind, "") + _md_inline(b.content), ""],
    Bullets: lambda b: [f"- {_md_inline(item)}" for item in b.items] + [""],
    Table: _md_table,
    Figure: lambda b: _md_figures([b], b.caption),
    FigureRow: lambda b: _md_figures(b.figures, b.caption or b.figures[0].caption),
}


def _render(renderers: dict[type, Callable], block: Block):
    if type(block) not in renderers:
        raise TypeError(f"unknown block {type(block).__name__}")
    return renderers[type(block)](block)


def render_markdown(blocks: Sequence[Block]) -> str:
    return "\n".join(line for block in blocks for line in _render(_MARKDOWN, block)).rstrip() + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1.5em; color: #1b1b1b; line-height: 1.5; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .15em; margin-top: 2em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6em 0 1.4em; font-size: 0.88em; }
th, td { border: 1px solid #d0d0d0; padding: .25em .6em; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0 1.8em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.row { display: flex; flex-wrap: wrap; gap: .8em; align-items: flex-start; }
.row img { max-width: 360px; }
figcaption { font-size: .9em; color: #444; font-style: italic; }
code { background: #f4f4f4; padding: 0 .2em; border-radius: 3px; }
p.note { background: #eef5ff; border-left: 4px solid #4a7bd0; padding: .4em .8em; }
p.warning { background: #fff3e6; border-left: 4px solid #e07b00; padding: .4em .8em; }
p.verdict { background: #f3f8ee; border-left: 4px solid #4d9a2a; padding: .4em .8em; }
"""


def _html_table(block: Table) -> str:
    parts = ['<div class="scroll"><table>']
    if block.caption:
        parts.append(f"<caption>{html.escape(block.caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.header) + "</tr></thead><tbody>")
    for r in block.rows:
        tds = []
        for i, c in enumerate(_cell(c) for c in r):
            text = f"<strong>{html.escape(c.text)}</strong>" if c.bold else html.escape(c.text)
            tds.append(f'<td class="num">{text}</td>' if i in block.numeric else f"<td>{text}</td>")
        parts.append("<tr>" + "".join(tds) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _html_paragraph(block: Paragraph) -> str:
    cls = f' class="{block.kind}"' if block.kind != "text" else ""
    lead = {"note": "<strong>Note.</strong> ", "warning": "<strong>⚠ Warning.</strong> "}.get(block.kind, "")
    return f"<p{cls}>{lead}{_html_inline(block.content)}</p>"


def paragraph_html(block: Paragraph) -> str:
    """One paragraph as the page writes it (for tools that rewrite a line of a written report)."""
    return _html_paragraph(block)


def _html_heading(block: Heading) -> str:
    level = min(max(block.level, 1), 6)
    return f"<h{level}>{html.escape(block.text)}</h{level}>"


def render_html(blocks: Sequence[Block], title: str, figure_root: Path, self_contained: bool = False) -> str:
    """The page, with inline CSS. Its figures are linked by their path under figure_root (the PNGs are
    stored once), or with `self_contained` embedded as base64 data URIs: one file to send."""

    def img(f: Figure) -> str:
        if self_contained:
            src = "data:image/png;base64," + base64.b64encode((figure_root / f.path).read_bytes()).decode("ascii")
        else:
            src = "/".join(map(quote, Path(f.path).parts))
        return f'<img src="{html.escape(src)}" alt="{html.escape(f.caption)}">'

    def figure_row(block: FigureRow) -> str:
        inner = "".join(f"<div>{img(f)}</div>" for f in block.figures)
        caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><div class="row">{inner}</div>{caption}</figure>'

    renderers = {
        Heading: _html_heading, Paragraph: _html_paragraph, Table: _html_table, FigureRow: figure_row,
        Bullets: lambda b: "<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>",
        Figure: lambda b: f"<figure>{img(b)}<figcaption>{html.escape(b.caption)}</figcaption></figure>",
    }
    body = [_render(renderers, block) for block in blocks]
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
