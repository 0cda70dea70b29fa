"""Shipped beat entries: django-celery-beat rows created when missing, never overwritten."""

from __future__ import annotations

import json

from django_celery_beat.models import IntervalSchedule, PeriodicTask


def ensure_interval_task(
    name: str,
    task: str,
    *,
    every: int,
    queue: str,
    expires: int,
    args: list | None = None,
    description: str = "",
) -> bool:
    """Create the periodic task ``name`` (every ``every`` s, messages expiring after ``expires`` s, so a
    backlog after downtime does not fire a storm) unless it exists; an operator's edits stand.
    Returns whether it was created."""
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
    _, created = PeriodicTask.objects.get_or_create(
        name=name,
        defaults={
            "task": task,
            "interval": interval,
            "queue": queue,
            "expire_seconds": expires,
            "args": json.dumps(args or []),
            "description": description,
        },
    )
    return created
