"""Small HTML pieces shared by the report (``theorycraft report``) and the notebook views
(``_repr_html_`` of Scorecard, FittedTheory, ActivationSet): escaped text, numbers, tables.
No scripts and nothing fetched: what they write renders offline."""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence


class Raw(str):
    """HTML that is written as it is (everything else is escaped)."""


class Num(Raw):
    """A figure already formatted (``fixed``): a table right-aligns it like a number."""


def fixed(value, digits: int) -> Num:
    return Num(num(value, digits))


def esc(value) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value))


def num(value, digits: int = 4) -> str:
    """A figure as the tables show it: ints with thousands separators, floats to ``digits``
    decimals (a true minus sign), None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}".replace("-", "−")
    return f"{value:,.{digits}f}".replace("-", "−")


def table(header: Sequence, rows: Iterable[Sequence], caption: str | None = None, cls: str = "tc") -> Raw:
    """A table; a cell that is a number is right-aligned and formatted with ``num``."""
    def cell(tag: str, value) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
            return f'<{tag} class="n">{num(value)}</{tag}>'
        if isinstance(value, Num):
            return f'<{tag} class="n">{value}</{tag}>'
        return f"<{tag}>{esc(value)}</{tag}>"

    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return Raw(f'<table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def code(text) -> Raw:
    return Raw(f"<code>{esc(text)}</code>")


def verdict(passed: bool) -> Raw:
    return Raw('<span class="pass">pass</span>' if passed else '<span class="fail">FAIL</span>')


# --- a page: what the report is built of ------------------------------------------------------

def figure(draw: Callable[[Path], None], alt: str, caption: str = "") -> Raw:
    """A plot drawn to a temporary PNG by ``draw(path)``, embedded in the page (nothing if
    there was nothing to draw)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        draw(path)
        if not path.exists():
            return Raw("")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return Raw(f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>')


def section(anchor: str, title: str, *parts) -> tuple[str, str, str]:
    return anchor, title, "\n".join(str(p) for p in parts if p)


def note(text) -> Raw:
    return Raw(f'<p class="note">{text}</p>')


def pre(text: str) -> Raw:
    return Raw(f"<pre>{esc(text)}</pre>")


def details(summary: str, body) -> Raw:
    return Raw(f"<details><summary>{esc(summary)}</summary>{body}</details>")


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}.sub{color:#666;margin:0 0 14px}
nav a{margin-right:14px;color:#245;text-decoration:none}nav{margin:8px 0 18px;font-size:13px}
table.tc{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
table.tc caption{text-align:left;color:#555;font-size:12px;padding:2px 0 4px;caption-side:top}
table.tc th,table.tc td{border:1px solid #d8d8d8;padding:3px 8px;vertical-align:top}
table.tc th{background:#f3f4f6;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#11711c;font-weight:600}.fail{color:#b3141b;font-weight:700}
.note{color:#555;background:#f7f7f2;border-left:3px solid #cbb;padding:6px 10px}
.figs{display:flex;flex-wrap:wrap;gap:12px}figure{margin:8px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:12px;max-width:900px}pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12px}
.big{display:flex;gap:14px;flex-wrap:wrap;margin:10px 0}.big div{border:1px solid #e2e2e2;border-radius:6px;padding:8px 14px}
.big b{display:block;font-size:20px}.big span{color:#666;font-size:12px}code{background:#f3f3f3;padding:0 3px}
"""


def page(title: str, subtitle: str, sections) -> str:
    """A whole page: the title, a subtitle (HTML), a bar of links to the sections, the sections."""
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    body = "\n".join(f'<section id="{a}"><h2>{esc(t)}</h2>\n{html}</section>' for a, t, html in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body><main>"
            f"<h1>{esc(title)}</h1><p class=\"sub\">{subtitle}</p>"
            f"<nav>{nav}</nav>\n{body}\n</main></body></html>\n")


def big(*figures: tuple[str, str]) -> Raw:
    return Raw('<div class="big">' + "".join(f"<div><b>{esc(v)}</b><span>{esc(k)}</span></div>"
                                             for k, v in figures) + "</div>")
