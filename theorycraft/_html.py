"""Small HTML pieces shared by the report (``theorycraft report``) and the notebook views
(``_repr_html_`` of Scorecard, FittedTheory, ActivationSet): escaped text, numbers, tables.
No scripts and nothing fetched: what they write renders offline."""

from __future__ import annotations

import html
from typing import Iterable, Sequence


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
