"""``grace_task``: the one way GRACE declares a Celery task, with the shared delivery options.

Every task: a pinned name (tests/test_celery_config.py), acknowledged late (a lost worker's message is
delivered again, so tasks are idempotent), soft and hard time limits, and transient errors (a database or Redis
hiccup) retried with bounded exponential backoff and jitter. Stage tasks store no result (they report through
the run's timeline; nobody waits on them).
"""

from __future__ import annotations

import redis
from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

# Database hiccups, and Redis outages while governance or resilience read their state (they fail closed).
TRANSIENT = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)
SHORT = {"soft_time_limit": 60, "time_limit": 90}


def grace_task(
    name: str,
    *,
    long: bool = False,
    result: bool = True,
    retry: tuple[type[BaseException], ...] = TRANSIENT,
    **options,
):
    """``@grace_task("app.name")``: a shared task with GRACE's options. ``long``: the stage limits
    (GRACE_TASK_SOFT_TIME_LIMIT / GRACE_TASK_TIME_LIMIT) instead of 60/90 s; ``result=False``: store no result;
    ``retry``: the exceptions retried with backoff (empty: none); other options override these."""
    limits = (
        {"soft_time_limit": settings.GRACE_TASK_SOFT_TIME_LIMIT, "time_limit": settings.GRACE_TASK_TIME_LIMIT}
        if long
        else SHORT
    )
    base: dict = {"acks_late": True, "ignore_result": not result, **limits}
    if retry:
        base.update(autoretry_for=retry, retry_backoff=1, retry_backoff_max=30, retry_jitter=True, max_retries=5)
    return shared_task(name=name, **{**base, **options})
