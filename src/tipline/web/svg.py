"""Small server-rendered SVG bar charts (no script, no outside library): each chart has
``role="img"``, a ``<title>`` and a ``<desc>`` naming every value, and a text label on
every bar; pages also show the same numbers in a table."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

_BAR = 22  # height of one horizontal bar row
_LABEL = 110  # width of the label column
_WIDTH = 520


def hbar(chart_id: str, title: str, rows: Sequence[tuple[str, int | float]]) -> Markup:
    """A horizontal bar chart of ``rows`` (label, value)."""
    top = max((float(v) for _, v in rows), default=0.0) or 1.0
    span = _WIDTH - _LABEL - 60
    height = max(len(rows), 1) * _BAR + 8
    desc = "; ".join(f"{label}: {_num(v)}" for label, v in rows) or "no data"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{_WIDTH}" height="{height}" viewBox="0 0 {_WIDTH} {height}" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" id="{chart_id}">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(desc)}</desc>',
    ]
    for i, (label, value) in enumerate(rows):
        y = 4 + i * _BAR
        w = round(span * float(value) / top, 1)
        parts.append(
            f'<text x="{_LABEL - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect fill="#2f5f8a" x="{_LABEL}" y="{y + 3}" width="{w}" height="{_BAR - 6}"/>'
            f'<text x="{_LABEL + w + 4}" y="{y + 15}">{_num(value)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _num(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{float(value):.2f}"
