"""Headings, paragraphs, tables, images and a table of contents, rendered to Markdown and to
self-contained HTML (PNGs embedded as base64; headings carry the ids the contents link to)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from spinnray.report.runs import fmt

_NUMBER = re.compile(r"[-+]?[\d.,]+(e[-+]?\d+)?( ?(%|B|KiB|MiB|GiB|s|ms))?")     # right-aligned in HTML tables


def anchor(heading: str) -> str:
    """The link target of a heading as GitHub and most Markdown renderers make it: lower case,
    punctuation dropped, spaces as hyphens (the HTML report gives its headings the same ids)."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


# --------------------------------------------------------------------------- document blocks
class Document:
    """Headings, paragraphs, tables and images, rendered to Markdown and HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def toc(self):
        """A table of contents here: a link to every level-2 heading after it."""
        self.blocks.append(("toc",))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list]):
        self.blocks.append(("table", header, [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]))

    def img(self, filename: str, alt: str):
        self.blocks.append(("img", filename, alt))

    def _contents(self, after: int) -> list[str]:
        return [b[2] for b in self.blocks[after + 1:] if b[0] == "h" and b[1] == 2]

    def markdown(self) -> str:
        out = []
        for i, b in enumerate(self.blocks):
            if b[0] == "toc":
                out.append("\n".join(f"- [{t}](#{anchor(t)})" for t in self._contents(i)))
            elif b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                line = lambda cells: "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # noqa: E731
                out.append("\n".join([line(b[1]), "|" + "---|" * len(b[1])] + [line(r) for r in b[2]]))
            else:
                out.append(f"![{b[2]}]({b[1]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str, folder: Path) -> str:
        def inline(s: str) -> str:
            s = html.escape(s)
            s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
            s = re.sub(r"\[([^\]]+)\]\((#[\w-]+)\)", r"<a href='\2'>\1</a>", s)     # links within the report
            s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
            return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", s)

        out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
               "td,th{border:1px solid #bbb;padding:2px 6px;text-align:left}td.n{text-align:right}img{max-width:100%}"
               "</style>",
               "</head><body>"]
        for i, b in enumerate(self.blocks):
            if b[0] == "toc":
                out.append("<ul>" + "".join(f"<li><a href='#{anchor(t)}'>{inline(t)}</a></li>"
                                            for t in self._contents(i)) + "</ul>")
            elif b[0] == "h":
                out.append(f"<h{b[1]} id='{anchor(b[2])}'>{inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{inline(b[1])}</p>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in b[1]) + "</tr>"
                           + "".join("<tr>" + "".join(f"<td class='n'>{inline(c)}</td>" if _NUMBER.fullmatch(c)
                                                      else f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in b[2])
                           + "</table>")
            else:
                data = base64.b64encode((folder / b[1]).read_bytes()).decode("ascii")
                out.append(f"<p><img alt='{html.escape(b[2])}' src='data:image/png;base64,{data}'></p>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"
