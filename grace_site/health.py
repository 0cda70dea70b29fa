"""`GET /api/health/`: the state of every component GRACE needs."""

from __future__ import annotations

import time
from collections.abc import Callable

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
from grace_site.scheduler import BEAT_TICK_KEY
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


def _check_beat() -> dict:
    raw = _redis_client().get(BEAT_TICK_KEY)
    if raw is None:
        return {"ok": False, "error": "beat has recorded no tick"}
    age = max(0.0, time.time() - float(raw))
    max_age = settings.GRACE_HEALTH_BEAT_MAX_AGE
    if age > max_age:
        return {"ok": False, "age_seconds": round(age, 1), "error": f"last beat tick is older than {max_age} s"}
    return {"ok": True, "age_seconds": round(age, 1)}


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
