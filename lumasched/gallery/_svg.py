"""Charts as inline SVG: a page that opens offline, draws without JavaScript and
weighs a few kilobytes. A plotting library would bring hundreds of megabytes
(matplotlib) or a script to vendor for what is here a few lines and bars."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import attrs

__all__ = ["Series", "bars", "lines"]

WIDTH, HEIGHT = 560, 236
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 42, 32
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f")


@attrs.frozen
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    step: bool = False
    """Drawn as a staircase (a count that holds until the next change)."""


def _nice(top: float) -> float:
    """A round number at or above ``top`` for the axis' end."""
    if top <= 0:
        return 1.0
    step = 10.0 ** len(str(int(top))) / 10
    for factor in (1, 2, 2.5, 5, 10):
        if step * factor >= top:
            return step * factor
    return top


def _frame(
    title: str,
    x_label: str,
    x_max: float,
    y_max: float,
    legend: Sequence[Series],
    *,
    x_ticks: bool = True,
) -> str:
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{_LEFT}" y="16" class="title">{escape(title)}</text>',
    ]
    for i in range(5):
        y = _TOP + plot_h * i / 4
        value = y_max * (4 - i) / 4
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{_fmt(value)}</text>"
        )
    for i in range(5 if x_ticks else 0):
        x = _LEFT + plot_w * i / 4
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 14}" class="tick" '
            f'text-anchor="middle">{_fmt(x_max * i / 4)}</text>'
        )
    parts.append(
        f'<text x="{WIDTH - _RIGHT}" y="{HEIGHT - 4}" class="tick" text-anchor="end">'
        f"{escape(x_label)}</text>"
    )
    x = float(_LEFT)
    for series in legend:
        label = escape(series.label)
        dash = ' stroke-dasharray="3 2"' if series.dashed else ""
        parts.append(
            f'<line x1="{x:.1f}" x2="{x + 12:.1f}" y1="27" y2="27" stroke="{series.color}" '
            f'stroke-width="3"{dash}/><text x="{x + 16:.1f}" y="31" class="tick">{label}</text>'
        )
        x += 24 + 6.5 * len(series.label)
    return "".join(parts)


def lines(
    title: str, series: Sequence[Series], *, x_label: str = "seconds", y_min_max: float = 1.0
) -> str:
    """A line chart of ``series`` (x, y) points, sharing one scale."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    x_max = _nice(max(xs, default=1.0))
    y_max = _nice(max([*ys, y_min_max]))
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    parts = [_frame(title, x_label, x_max, y_max, series)]
    for s in series:
        coords: list[str] = []
        previous: float | None = None
        for x, y in s.points:
            px = _LEFT + plot_w * x / x_max
            py = _TOP + plot_h * (1 - y / y_max)
            if s.step and previous is not None:
                coords.append(f"{px:.1f},{previous:.1f}")
            coords.append(f"{px:.1f},{py:.1f}")
            previous = py
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        parts.append(
            f'<polyline fill="none" stroke="{s.color}" stroke-width="1.8"{dash} '
            f'points="{" ".join(coords)}"><title>{escape(s.label)}</title></polyline>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bars(
    title: str,
    labels: Sequence[str],
    groups: Sequence[Series],
    *,
    x_label: str = "",
) -> str:
    """Grouped bars: one group per label, one bar per series (its y at that index)."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    y_max = _nice(max([y for g in groups for _, y in g.points] or [1.0]))
    legend = groups if len(groups) > 1 else ()
    parts = [_frame(title, x_label, 0, y_max, legend, x_ticks=False)]
    slot = plot_w / max(1, len(labels))
    width = slot * 0.8 / max(1, len(groups))
    for index, label in enumerate(labels):
        x0 = _LEFT + slot * index + slot * 0.1
        for g_index, group in enumerate(groups):
            y = next((v for i, v in group.points if int(i) == index), 0.0)
            h = plot_h * y / y_max
            parts.append(
                f'<rect x="{x0 + width * g_index:.1f}" y="{_TOP + plot_h - h:.1f}" '
                f'width="{max(width - 1, 1):.1f}" height="{h:.1f}" fill="{group.color}">'
                f"<title>{escape(group.label)} {escape(label)}: {_fmt(y)}</title></rect>"
            )
        if len(labels) <= 12 or index % max(1, len(labels) // 8) == 0:
            parts.append(
                f'<text x="{x0 + slot * 0.4:.1f}" y="{HEIGHT - _BOTTOM + 14}" class="tick" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}"
