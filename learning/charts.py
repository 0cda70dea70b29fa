"""Server-side SVG line charts for the admin: no JavaScript, no CDN.

A chart is built from plain numbers and returned as markup safe to embed;
every label is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 30


@dataclass(frozen=True)
class Point:
    label: str  # x-axis label (a date, a run id)
    value: float | None  # None: no value (a failed check); drawn as a gap
    band: tuple[float, float] | None = None  # shaded range behind the line (baseline band)
    alert: bool = False  # drawn as a red dot (a regression, a failure streak)
    warn: bool = False  # drawn as an amber dot (over the threshold once, not a regression)


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.3g}"


def line_chart(
    points: Sequence[Point], *, title: str, unit: str = "", y_min: float | None = None, y_max: float | None = None
) -> SafeString:
    """An SVG line chart of ``points`` in order, with an optional band and alert markers."""
    values = [p.value for p in points if p.value is not None]
    bands = [b for p in points if p.band for b in p.band]
    if not values:
        return mark_safe(  # noqa: S308 - only escaped text is interpolated
            f'<svg class="grace-chart" role="img" width="{WIDTH}" height="40" xmlns="http://www.w3.org/2000/svg">'
            f'<title>{escape(title)}</title><text x="4" y="24">{escape(title)}: no data yet</text></svg>'
        )
    low = y_min if y_min is not None else min(values + bands)
    high = y_max if y_max is not None else max(values + bands)
    if high <= low:
        high = low + (abs(low) or 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return LEFT + i * step if len(points) > 1 else LEFT + plot_w / 2

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - low) / (high - low))

    parts = [
        f'<svg class="grace-chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    banded = [(i, p.band) for i, p in enumerate(points) if p.band]
    if banded:
        upper = " ".join(f"{x(i):.1f},{y(max(b)):.1f}" for i, b in banded)
        lower = " ".join(f"{x(i):.1f},{y(min(b)):.1f}" for i, b in reversed(banded))
        parts.append(f'<polygon class="band" points="{upper} {lower}" fill="#cfe3f7" stroke="none"/>')
    for v in (low, (low + high) / 2, high):
        parts.append(f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{escape(_fmt(v))}</text>')
    segment: list[str] = []
    for i, p in enumerate([*points, Point("", None)]):  # the sentinel closes the last segment
        if p.value is None:
            if len(segment) > 1:
                parts.append(f'<polyline class="line" points="{" ".join(segment)}" fill="none" stroke="#2a6ebb"/>')
            segment = []
            continue
        segment.append(f"{x(i):.1f},{y(p.value):.1f}")
    for i, p in enumerate(points):
        if p.value is None:
            continue
        colour = "#d9362b" if p.alert else "#d4a017" if p.warn else "#2a6ebb"
        kind = "alert" if p.alert else "warn" if p.warn else "point"
        tip = escape(f"{p.label}: {_fmt(p.value)} {unit}".strip())
        parts.append(
            f'<circle class="{kind}" cx="{x(i):.1f}" cy="{y(p.value):.1f}" r="{4 if p.alert or p.warn else 3}" '
            f'fill="{colour}"><title>{tip}</title></circle>'
        )
    last = len(points) - 1
    for i in sorted({0, last, last // 2}):
        # The outer labels align inwards, so neither is cut at the chart's edges.
        anchor = "start" if i == 0 and last else "end" if i == last and last else "middle"
        parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 10}" text-anchor="{anchor}">{escape(points[i].label)}</text>')
    parts.append(f'<text x="{LEFT}" y="{TOP - 3}">{escape(title)}{escape(f" ({unit})" if unit else "")}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above
