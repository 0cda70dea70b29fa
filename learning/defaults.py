"""Shipped data: the smoke and full benchmark suites and their beat schedules (``manage.py grace_setup``)."""

from __future__ import annotations

from grace_site.beat import ensure_interval_task
from learning.models import BenchmarkSuite

SUITES: dict[str, dict] = {
    "smoke": {
        "description": "Four quick round trips: database, Redis, Celery (grace.ping) and the configured HTTP "
        "health URL.",
        "checks": [
            {"kind": "database", "params": {}},
            {"kind": "redis", "params": {}},
            {"kind": "celery", "params": {}},
            {"kind": "http", "params": {"name": "health"}},
        ],
    },
    "full": {
        "description": "Database write/read throughput, queue latency percentiles, disk I/O and HTTP latency "
        "percentiles of every configured endpoint.",
        "checks": [
            {"kind": "database_throughput", "params": {"rows": 2000}},
            {"kind": "queue_latency", "params": {"count": 20}},
            {"kind": "disk_io", "params": {"megabytes": 8}},
            {"kind": "http_latency", "params": {"count": 20}},
        ],
    },
}

# name -> (suite, every seconds, message expiry seconds)
SCHEDULES = {
    "learning: smoke benchmark": ("smoke", 300, 240),
    "learning: full benchmark": ("full", 3600, 1800),
}


def install() -> int:
    """Create the shipped suites and beat entries that are missing; never overwrite edits. Returns the count created."""
    created = 0
    for name, definition in SUITES.items():
        _, new = BenchmarkSuite.objects.get_or_create(name=name, defaults=definition)
        created += new
    for task_name, (suite, every, expire) in SCHEDULES.items():
        created += ensure_interval_task(
            task_name,
            "learning.benchmark_run",
            every=every,
            queue="benchmarks",
            expires=expire,
            args=[suite],
            description=f"Runs the {suite} benchmark suite and flags regressions.",
        )
    return created
