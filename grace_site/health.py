"""`GET /api/health/`: the state of every component GRACE needs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, permission_classes, throttle_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

import grace_site
from grace_site import redis as grace_redis
from grace_site.celery import app as celery_app
from grace_site.scheduler import BEAT_SCHEDULER_KEY, BEAT_TICK_KEY, SCHEDULER_PATH
from grace_site.throttling import HealthThrottle


def _check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "vendor": connection.vendor}


def _redis_client() -> redis.Redis:
    return grace_redis.client(connect_timeout=1, timeout=1)


def _check_redis() -> dict:
    _redis_client().ping()
    return {"ok": True}


def _check_worker() -> dict:
    # limit=1: return as soon as one worker answers instead of waiting out the timeout.
    replies = celery_app.control.ping(timeout=settings.GRACE_HEALTH_WORKER_TIMEOUT, limit=1)
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return {"ok": False, "error": "no Celery worker answered a ping"}
    return {"ok": True, "workers": workers}


def _foreign_scheduler(client: redis.Redis) -> dict | None:
    """The last beat that started, when it ran a scheduler that records no tick."""
    raw = client.get(BEAT_SCHEDULER_KEY)
    try:
        entry = json.loads(raw) if raw else None
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and not entry.get("records_ticks", True) else None


def _check_beat() -> dict:
    client = _redis_client()
    raw = client.get(BEAT_TICK_KEY)
    age = max(0.0, time.time() - float(raw)) if raw is not None else None
    max_age = settings.GRACE_HEALTH_BEAT_MAX_AGE
    if age is not None and age <= max_age:
        return {"ok": True, "age_seconds": round(age, 1)}
    foreign = _foreign_scheduler(client)
    if foreign is not None:
        started = datetime.fromtimestamp(float(foreign.get("started_at", 0)), tz=UTC).isoformat(timespec="seconds")
        error = (
            f"beat started at {started} (pid {foreign.get('pid')} on {foreign.get('host')}) runs the scheduler "
            f"{foreign.get('scheduler')}, which records no tick and does not run GRACE's schedules from the "
            f"database: start it with `celery -A grace_site beat -S {SCHEDULER_PATH}` (as make run does)"
        )
    elif age is None:
        error = "beat has recorded no tick"
    else:
        error = f"last beat tick is older than {max_age} s"
    result = {"ok": False, "error": error}
    if age is not None:
        result["age_seconds"] = round(age, 1)
    if foreign is not None:
        result["scheduler"] = foreign.get("scheduler")
    return result


CHECKS: dict[str, Callable[[], dict]] = {
    "database": _check_database,
    "redis": _check_redis,
    "worker": _check_worker,
    "beat": _check_beat,
}

# Checks whose findings are warnings: listed under "warnings", never failing the whole (no 503). Apps
# register theirs from AppConfig.ready(), since grace_site imports no app. A warning check returns a dict
# with "warning" (a sentence) when something needs attention.
WARNING_CHECKS: dict[str, Callable[[], dict]] = {}


def register_warning_check(name: str, check: Callable[[], dict]) -> None:
    WARNING_CHECKS[name] = check


def run_checks() -> dict:
    components = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, by name
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["ms"] = round((time.perf_counter() - started) * 1000, 1)
        components[name] = result
    failing = [name for name, result in components.items() if not result["ok"]]
    for name, check in WARNING_CHECKS.items():
        started = time.perf_counter()
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - reported, by name, as a warning
            result = {"warning": f"{type(exc).__name__}: {exc}"}
        result["ok"] = True
        result["ms"] = round((time.perf_counter() - started) * 1000, 1)
        components[name] = result
    return {
        "status": "ok" if not failing else "failing",
        "failing": failing,
        "warnings": [name for name, result in components.items() if result.get("warning")],
        "version": grace_site.__version__,
        "components": components,
    }


@extend_schema(summary="Health of the database, Redis, Celery workers and beat", responses={200: dict, 503: dict})
@api_view(["GET"])
@permission_classes([AllowAny])
@throttle_classes([HealthThrottle])
def health(request):
    report = run_checks()
    return Response(report, status=200 if not report["failing"] else 503)
