"""Bar charts as inline SVG, drawn on the server: no script, no third-party library.

Colours and fonts come from the console's stylesheet through class names, so a chart
follows the light or dark theme; every bar carries a ``<title>`` with its exact value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH = 900
HEIGHT = 190
_TOP = 16
_BOTTOM = 28
_LEFT = 76
_RIGHT = 8


def _nice_max(value: float) -> float:
    """A round number at or above ``value`` for the top of the axis."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** (math.floor(math.log10(value)) + 1)  # the power of ten above it
    for step in (0.1, 0.2, 0.25, 0.5, 1.0):
        if value <= magnitude * step * (1 + 1e-9):
            return magnitude * step
    return magnitude


def _tick(value: float, unit: str) -> str:
    if unit == "$":
        if value == 0:
            return "$0"
        return f"${value:,.2f}" if value >= 1 else "$" + f"{value:.8f}".rstrip("0")
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:,.2f}"


def bar_chart(points: Sequence[tuple[str, float]], label: str, unit: str = "") -> Markup:
    """An SVG bar chart of ``points`` (label, value), titled ``label`` for screen readers."""
    if not points:
        return Markup("")
    top = _nice_max(max(v for _, v in points))
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = plot_w / len(points)
    bar_w = max(slot * 0.7, 1.0)
    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
           f"<title>{escape(label)}</title>"]
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - fraction)
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" '
                   f'y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{escape(_tick(top * fraction, unit))}</text>')
    every = max(1, len(points) // 8)  # at most about eight labels under the bars
    for i, (name, value) in enumerate(points):
        h = plot_h * (value / top) if top else 0.0
        x = _LEFT + slot * i + (slot - bar_w) / 2
        y = _TOP + plot_h - h
        shown = _tick(value, unit) if unit == "$" else f"{value:,.6g}"
        out.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                   f'height="{max(h, 0.0):.1f}"><title>{escape(name)}: '
                   f"{escape(shown)}</title></rect>")
        if i % every == 0:
            short = name if len(name) <= 12 else name[:11] + "…"
            out.append(f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{HEIGHT - 10}" '
                       f'text-anchor="middle">{escape(short)}</text>')
    out.append("</svg>")
    return Markup("".join(out))
