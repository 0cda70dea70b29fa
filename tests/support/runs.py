"""Helpers for pipeline tests: wait for runs, build real SQLite files with a bloated WAL."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from django.db import connection

from remediation.choices import RunStatus
from remediation.models import HealRun


def wait_for(
    predicate,
    *,
    timeout: float = 60.0,
    interval: float = 0.05,
    what: str = "condition",
    fresh_reads: bool = False,
    detail=None,
):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` s pass (AssertionError).

    ``fresh_reads`` starts each poll on a fresh database connection, so a transactional test reads what a
    worker process committed meanwhile (never inside a test's atomic block). ``detail`` is called on timeout
    for more to say (a worker's log...).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fresh_reads:
            connection.close_if_unusable_or_obsolete()
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f"; {detail()}" if detail else ""))


def wait_for_run(incident_id: int, *, statuses=RunStatus.TERMINAL, timeout: float = 60.0) -> HealRun:
    def done():
        return HealRun.objects.filter(incident_id=incident_id, status__in=statuses).order_by("-pk").first()

    try:
        return wait_for(done, timeout=timeout, what=f"a run of incident {incident_id} in {statuses}", fresh_reads=True)
    except AssertionError:
        runs = list(HealRun.objects.filter(incident_id=incident_id).values("pk", "status", "status_reason"))
        raise AssertionError(f"no run of incident {incident_id} reached {statuses}; runs: {runs}") from None


def bloated_wal_db(path: Path, *, rows: int = 3000, row_bytes: int = 1024) -> sqlite3.Connection:
    """Create a SQLite database whose WAL holds ``rows`` uncheckpointed rows.

    Returns an idle connection that the caller keeps open: while it exists the
    last writer's close does not checkpoint, so the WAL stays as it is (like a
    live application holding its database open).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    keeper = sqlite3.connect(path)
    keeper.execute("PRAGMA journal_mode=WAL")
    keeper.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, body BLOB)")
    keeper.commit()
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    payload = b"x" * row_bytes
    with writer:
        writer.executemany("INSERT INTO orders (body) VALUES (?)", ((payload,) for _ in range(rows)))
    writer.close()
    return keeper


def wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0
