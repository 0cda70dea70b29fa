"""Worker processes keep their database connection between tasks (CONN_MAX_AGE), and replace
one that broke: Celery's Django fixup alone would open a new one for every task."""

from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.db import connection

from grace_site.celery import app
from tests.support.processes import start_worker
from tests.support.runs import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _db_handles(worker_pid: int) -> set[tuple[int, object]]:
    """(process, connection) pairs of the database connections the worker's processes hold open."""
    db = settings.DATABASES["default"]
    handles: set[tuple[int, object]] = set()
    for proc in psutil.Process(worker_pid).children(recursive=True):
        if connection.vendor == "postgresql":
            port = int(db["PORT"] or 5432)
            for conn in proc.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED:
                    handles.add((proc.pid, conn.laddr.port))
        else:
            target = Path(db["NAME"]).resolve()
            for f in proc.open_files():
                if Path(f.path) == target:
                    handles.add((proc.pid, f.fd))
    return handles


def _alive(cursor, pids: list[int]) -> bool:
    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
    return cursor.fetchone()[0] > 0


def _run_tasks(count: int) -> None:
    """Tasks that read the database (the reaper finds nothing to do), one at a time."""
    for _ in range(count):
        app.send_task("remediation.reap", queue="heal.local").get(timeout=30)


def test_a_worker_reuses_its_database_connection_across_tasks(django_db_blocker, tmp_path):
    # A worker of its own, with connections young enough that none reaches its age limit mid-test.
    with django_db_blocker.unblock():
        worker, _ = start_worker(tmp_path, GRACE_DB_CONN_MAX_AGE="3600")
    try:
        _run_tasks(6)
        first = _db_handles(worker.proc.pid)
        assert first, "no worker process holds a database connection after its tasks ended"
        _run_tasks(6)
        # The same connections serve the next tasks: none was closed and reopened.
        assert first <= _db_handles(worker.proc.pid)
    finally:
        worker.stop()


def test_a_broken_worker_connection_is_replaced_before_the_next_task(celery_worker, worker_pool):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no server session to terminate; this runs in the PostgreSQL pass of make test")
    _run_tasks(4)
    before = _db_handles(worker_pool.worker.proc.pid)
    log_from = worker_pool.worker.log_path.stat().st_size
    ports = [port for _, port in before]
    assert ports, "the worker held no session to terminate"
    with connection.cursor() as cursor:
        cursor.execute(
            # Materialized first, so only the worker's sessions are ever passed to pg_terminate_backend.
            "WITH worker AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s))"
            " SELECT pid FROM worker WHERE pg_terminate_backend(pid)",
            [ports],
        )
        terminated = [pid for (pid,) in cursor.fetchall()]
        assert len(terminated) == len(ports)
        # pg_terminate_backend only signals: wait until the sessions are gone.
        wait_for(lambda: not _alive(cursor, terminated), timeout=10, what="the terminated sessions to end")
    # Every task succeeds on its first try: the health check before each one reconnects.
    _run_tasks(4)
    with open(worker_pool.worker.log_path, "rb") as log:
        log.seek(log_from)
        assert b"] retry: " not in log.read()  # how Celery logs a retried task
    after = _db_handles(worker_pool.worker.proc.pid)
    assert after and not (after & before)
