"""Benchmark checks: each kind measures real components and returns its metrics.

A check is ``{"kind": <name>, "params": {...}}`` in a suite's ``checks``. A
check that cannot run raises; the runner records every metric it declares as
failed with the error, so a broken Redis shows up as "redis check failed:
ConnectionError ..." instead of a crash. Latencies are in milliseconds,
throughputs per second. ``floor`` is the smallest change (in the metric's
unit) that regression detection may call a regression: below it, the noise of
a shared machine dominates. On a busy 2-core machine a sub-millisecond database
or Redis round trip takes 2-10 ms in one run out of five (tests/learning/data
holds recorded series), hence 5 ms for those; ``GRACE_BENCH_FLOORS`` overrides
any metric's floor.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
from celery import current_app
from django.conf import settings
from django.db import connection, transaction

from grace_site import redis as grace_redis
from incidents.choices import ResourceKind
from incidents.models import Resource
from learning.estimators import percentile


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str = "ms"
    higher_is_better: bool = False
    floor: float = 1.0


@dataclass
class Measurement:
    metric: Metric
    value: float
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CheckKind:
    metrics: Callable[[dict], list[Metric]]
    run: Callable[[dict], list[Measurement]]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:80] or "endpoint"


# --- smoke: one round trip each ------------------------------------------------------------

DB_ROUNDTRIP = Metric("database.roundtrip_ms", floor=5.0)
REDIS_ROUNDTRIP = Metric("redis.roundtrip_ms", floor=5.0)
# 5 ms as well: on a quiet machine the Celery round trip takes 5-6 ms, and a floor above twice that would hide a
# 3x slowdown of its fast runs.
CELERY_ROUNDTRIP = Metric("celery.roundtrip_ms", floor=5.0)


def database_roundtrip(params: dict) -> list[Measurement]:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return [Measurement(DB_ROUNDTRIP, _ms(started), {"vendor": connection.vendor})]


def _redis(url: str, timeout: float) -> redis.Redis:
    """One pooled client per URL, so a check measures a round trip rather than a TCP handshake."""
    return grace_redis.client(url, connect_timeout=timeout, timeout=timeout)


def redis_roundtrip(params: dict) -> list[Measurement]:
    client = _redis(params.get("url") or settings.REDIS_URL, float(params.get("timeout", 1.0)))
    started = time.perf_counter()
    client.set("grace:bench:smoke", "1", ex=60)
    client.get("grace:bench:smoke")
    return [Measurement(REDIS_ROUNDTRIP, _ms(started))]


def _ping_once(timeout: float) -> float:
    """One ``grace.ping`` round trip through a worker, given up after ``timeout`` seconds whatever Redis does
    (sending and subscribing to the result may each retry their connection to a Redis that is down)."""
    started = time.perf_counter()
    outcome: dict = {}

    def ping() -> None:
        try:
            result = current_app.send_task("grace.ping", queue="default", retry=False)
            try:
                # The suite may itself run inside a worker (queue benchmarks): waiting on another queue is safe.
                outcome["reply"] = result.get(timeout=timeout, disable_sync_subtasks=False)
            finally:
                result.forget()
        except Exception as exc:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=ping, name="grace-ping", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"grace.ping: no round trip within {timeout} s (broker or result store unreachable?)")
    if "error" in outcome:
        raise outcome["error"]
    reply = outcome["reply"]
    if reply != "pong":
        raise RuntimeError(f"grace.ping answered {reply!r}")
    return _ms(started)


def celery_roundtrip(params: dict) -> list[Measurement]:
    timeout = float(params.get("timeout", settings.GRACE_BENCH_CELERY_TIMEOUT))
    return [Measurement(CELERY_ROUNDTRIP, _ping_once(timeout))]


def endpoints() -> list[str]:
    """The HTTP endpoints the checks probe: ``GRACE_BENCH_HTTP_URLS`` when set, else the http resources of the
    inventory service ``GRACE_BENCH_SERVICE`` (by name), else GRACE's own health endpoint."""
    if settings.GRACE_BENCH_HTTP_URLS:
        return list(settings.GRACE_BENCH_HTTP_URLS)
    urls = list(
        Resource.objects.filter(service__name=settings.GRACE_BENCH_SERVICE, kind=ResourceKind.HTTP)
        .order_by("name")
        .values_list("target", flat=True)
    )
    return urls or [f"http://127.0.0.1:{settings.GRACE_PORT}/api/health/"]


def _urls(params: dict) -> list[str]:
    if params.get("url"):
        return [params["url"]]
    urls = endpoints()
    return urls if params.get("all") else urls[:1]


def _get(url: str, params: dict) -> float:
    expected = params.get("expect_status", 200)
    started = time.perf_counter()
    response = requests.get(url, timeout=float(params.get("timeout", settings.GRACE_BENCH_HTTP_TIMEOUT)))
    elapsed = _ms(started)
    if response.status_code != expected:
        raise RuntimeError(f"{url} answered HTTP {response.status_code}, expected {expected}: {response.text[:200]}")
    return elapsed


def _http_metric(params: dict) -> Metric:
    return Metric(f"http.{params.get('name') or 'health'}_ms", floor=8.0)


def http_health(params: dict) -> list[Measurement]:
    url = _urls(params)[0]
    return [Measurement(_http_metric(params), _get(url, params), {"url": url})]


# --- full: throughput, latency distributions, disk ------------------------------------------


def database_throughput(params: dict) -> list[Measurement]:
    from learning.models import BenchmarkScratch

    rows = int(params.get("rows", 2000))
    token = os.urandom(8).hex()
    started = time.perf_counter()
    with transaction.atomic():
        BenchmarkScratch.objects.bulk_create(
            [BenchmarkScratch(token=token, payload=f"row {i:08d} " + "x" * 80) for i in range(rows)], batch_size=500
        )
    write_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        read = sum(1 for _ in BenchmarkScratch.objects.filter(token=token).values_list("payload", flat=True))
        read_s = time.perf_counter() - started
    finally:
        with transaction.atomic():
            BenchmarkScratch.objects.filter(token=token).delete()
    if read != rows:
        raise RuntimeError(f"wrote {rows} rows but read back {read}")
    return [
        Measurement(DB_WRITE, rows / write_s, {"rows": rows, "seconds": round(write_s, 4)}),
        Measurement(DB_READ, rows / read_s, {"rows": rows, "seconds": round(read_s, 4)}),
    ]


DB_WRITE = Metric("database.write_rows_per_s", unit="rows/s", higher_is_better=True, floor=0.0)
DB_READ = Metric("database.read_rows_per_s", unit="rows/s", higher_is_better=True, floor=0.0)
QUEUE_P50 = Metric("queue.latency_p50_ms", floor=10.0)
QUEUE_P99 = Metric("queue.latency_p99_ms", floor=25.0)


def queue_latency(params: dict) -> list[Measurement]:
    count = int(params.get("count", 20))
    timeout = float(params.get("timeout", settings.GRACE_BENCH_CELERY_TIMEOUT))
    samples = [_ping_once(timeout) for _ in range(count)]
    details = {"count": count, "max_ms": round(max(samples), 3)}
    return [
        Measurement(QUEUE_P50, percentile(samples, 50), details),
        Measurement(QUEUE_P99, percentile(samples, 99), details),
    ]


DISK_WRITE = Metric("disk.write_mb_per_s", unit="MB/s", higher_is_better=True, floor=0.0)
DISK_FSYNC = Metric("disk.fsync_ms", floor=10.0)
DISK_READ = Metric("disk.read_mb_per_s", unit="MB/s", higher_is_better=True, floor=0.0)


def disk_io(params: dict) -> list[Measurement]:
    size_mb = int(params.get("megabytes", 8))
    directory = Path(params.get("directory") or settings.GRACE_BENCH_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"disk-{os.getpid()}-{os.urandom(4).hex()}.bin"
    block = os.urandom(1024 * 1024)
    try:
        started = time.perf_counter()
        with open(path, "wb") as fh:
            for _ in range(size_mb):
                fh.write(block)
            fh.flush()
            synced = time.perf_counter()
            os.fsync(fh.fileno())
            fsync_ms = _ms(synced)
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        with open(path, "rb") as fh:
            while fh.read(1024 * 1024):
                pass
        read_s = time.perf_counter() - started
    finally:
        path.unlink(missing_ok=True)
    details = {"megabytes": size_mb, "directory": str(directory)}
    return [
        Measurement(DISK_WRITE, size_mb / write_s, details),
        Measurement(DISK_FSYNC, fsync_ms, details),
        Measurement(DISK_READ, size_mb / read_s, {**details, "note": "read back through the page cache"}),
    ]


def _latency_metrics(url: str) -> list[Metric]:
    name = slug(url.split("://", 1)[-1])
    return [Metric(f"http.{name}.p{q}_ms", floor=10.0 if q == 50 else 25.0) for q in (50, 95, 99)]


def http_latency(params: dict) -> list[Measurement]:
    count = int(params.get("count", 20))
    measurements = []
    for url in _urls({**params, "all": True}):
        samples = [_get(url, params) for _ in range(count)]
        for metric, q in zip(_latency_metrics(url), (50, 95, 99), strict=True):
            measurements.append(Measurement(metric, percentile(samples, q), {"url": url, "count": count}))
    return measurements


KINDS: dict[str, CheckKind] = {
    "database": CheckKind(lambda p: [DB_ROUNDTRIP], database_roundtrip),
    "redis": CheckKind(lambda p: [REDIS_ROUNDTRIP], redis_roundtrip),
    "celery": CheckKind(lambda p: [CELERY_ROUNDTRIP], celery_roundtrip),
    "http": CheckKind(lambda p: [_http_metric(p)], http_health),
    "database_throughput": CheckKind(lambda p: [DB_WRITE, DB_READ], database_throughput),
    "queue_latency": CheckKind(lambda p: [QUEUE_P50, QUEUE_P99], queue_latency),
    "disk_io": CheckKind(lambda p: [DISK_WRITE, DISK_FSYNC, DISK_READ], disk_io),
    "http_latency": CheckKind(
        lambda p: [m for url in _urls({**p, "all": True}) for m in _latency_metrics(url)], http_latency
    ),
}
