"""Template filters of GRACE's admin pages: times to the millisecond with their zone, durations, sizes,
numbers rounded for people, contract predicates in words."""

from __future__ import annotations

import math
from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

OPERATORS = {"<=": "≤", ">=": "≥", "==": "=", "!=": "≠", "<": "<", ">": ">", "in": "in", "not_in": "not in"}


@register.filter
def ms_time(value: datetime | None, with_date: bool = False) -> str:
    """``19:43:22.123 UTC`` (``2026-12-06 19:43:22.123 UTC`` with the date) in the display time zone."""
    if not value:
        return "-"
    local = timezone.localtime(value)
    stamp = local.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
    return f"{stamp}.{local.microsecond // 1000:03d} {local.tzname()}"


@register.filter
def ms_datetime(value: datetime | None) -> str:
    return ms_time(value, True)


@register.filter
def duration(seconds: float | None) -> str:
    """``324 ms``, ``4.2 s``, ``3 min 12 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@register.filter
def since(value: datetime | None) -> str:
    """How long ago, as a duration (``4.2 s``, ``3 min``)."""
    if not value:
        return "-"
    return duration(max(0.0, (timezone.now() - value).total_seconds()))


@register.filter
def until(value: datetime | None) -> str:
    """Time left until ``value``, or ``overdue``."""
    if not value:
        return "-"
    left = (value - timezone.now()).total_seconds()
    return "overdue" if left <= 0 else duration(left)


@register.filter
def filesize(value) -> str:
    """Bytes in binary units: ``1 MiB``, ``3.2 KiB``, ``512 B``."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" or size == int(size) else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


@register.filter
def sig(value, digits: int = 3) -> str:
    """A measurement rounded for people: 3 significant digits, no exponent, thousands separated."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return str(value if not math.isfinite(value) else 0)
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, int(digits) - 1 - magnitude)
    return f"{round(value, decimals):,.{decimals}f}"


@register.filter
def fact(value) -> str:
    """A fact or contract value in words: booleans, None, sizes kept as they are, lists joined."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return sig(value)
    if isinstance(value, list):
        return ", ".join(fact(v) for v in value) or "(empty)"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fact(v)}" for k, v in value.items()) or "(empty)"
    return str(value)


@register.filter
def fact_for(value, field: str) -> str:
    """A fact, with a size in bytes also shown in binary units (``1 MiB (1048576)``)."""
    if isinstance(field, str) and field.endswith("bytes") and isinstance(value, int) and not isinstance(value, bool):
        return f"{filesize(value)} ({value})" if value >= 1024 else f"{value} B"
    return fact(value)


@register.filter
def predicate(p: dict) -> str:
    """``wal_bytes ≤ 1048576 within 10 s`` from a contract predicate."""
    if not isinstance(p, dict):
        return str(p)
    text = f"{p.get('field', '?')} {OPERATORS.get(p.get('op'), p.get('op', '?'))} {fact(p.get('value'))}"
    return f"{text} within {p['within']:g} s" if p.get("within") else text


@register.filter
def operator(op: str) -> str:
    return OPERATORS.get(op, op)


@register.filter
def items_sorted(value: dict):
    return sorted(value.items()) if isinstance(value, dict) else []


@register.simple_tag
def bar(fraction: float, *, width: int = 120, colour: str = "#2a6ebb", label: str = ""):
    """A small horizontal SVG bar (``fraction`` of ``width``), drawn on the server."""
    fraction = min(max(float(fraction or 0), 0.0), 1.0)
    filled = max(1.0, fraction * width) if fraction > 0 else 0.0
    return format_html(
        '<svg class="grace-bar" width="{}" height="10" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">'
        '<rect x="0" y="1" width="{}" height="8" fill="#e8eef5"/>'
        '<rect x="0" y="1" width="{}" height="8" fill="{}"/></svg>',
        width,
        label,
        width,
        f"{filled:.1f}",
        colour,
    )


@register.filter
def took(start: datetime | None, end: datetime | None) -> str:
    """The duration from ``start`` to ``end``."""
    if not start or not end:
        return "-"
    return duration(max(0.0, (end - start).total_seconds()))
