"""Health sweeps against real SQLite files, a real PostgreSQL, a real HTTP server and this host."""

import os
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from django_celery_beat.models import PeriodicTask

from incidents import defaults, sweeps
from incidents.models import Incident, SweepTarget
from incidents.tasks import sweep_sqlite
from tests.support.runs import wait_for as poll_until

WAL_LIMIT = 256 * 1024


def bloated_sqlite(path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """A WAL database whose -wal file is over WAL_LIMIT: a reader pins a snapshot, a writer never checkpoints."""
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (payload BLOB)")
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()
    for _ in range(64):
        writer.execute("INSERT INTO t VALUES (?)", [os.urandom(16 * 1024)])
    assert os.path.getsize(f"{path}-wal") > WAL_LIMIT
    return writer, reader


def wait_for(predicate, timeout: float = 30.0):
    return poll_until(predicate, timeout=timeout, interval=0.1)


@pytest.mark.django_db
def test_a_bloated_sqlite_wal_opens_a_wal_bloat_incident_the_pipeline_can_act_on(tmp_path, default_rules):
    db = tmp_path / "orders.sqlite3"
    writer, reader = bloated_sqlite(db)
    target = SweepTarget.objects.create(
        name="orders-db", kind="sqlite", location=str(db), thresholds={"wal_bytes": WAL_LIMIT}
    )
    try:
        result = sweeps.sweep("sqlite")
        again = sweeps.sweep("sqlite")
    finally:
        reader.close()
        writer.close()

    incident = Incident.objects.get()
    assert result["orders-db"]["breaches"] == ["sqlite_wal"]
    assert again["orders-db"]["incidents"] == [incident.pk]
    assert incident.diagnosis_code == "database_wal_bloat"
    assert (incident.source, incident.service, incident.occurrences) == ("sweep", "orders-db", 2)
    assert incident.labels["db_path"] == str(db)
    assert int(incident.labels["wal_bytes"]) > WAL_LIMIT
    target.refresh_from_db()
    assert target.last_result["breaches"] == ["sqlite_wal"] and target.last_checked_at is not None


@pytest.mark.django_db
def test_a_check_back_within_threshold_resolves_the_sweep_incident(tmp_path, default_rules):
    db = tmp_path / "orders.sqlite3"
    writer, reader = bloated_sqlite(db)
    SweepTarget.objects.create(name="orders-db", kind="sqlite", location=str(db), thresholds={"wal_bytes": WAL_LIMIT})
    sweeps.sweep("sqlite")
    reader.close()
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    writer.close()

    result = sweeps.sweep("sqlite")

    incident = Incident.objects.get()
    assert result["orders-db"]["resolved"] == [incident.pk]
    assert incident.status == "resolved" and "back within threshold" in incident.status_reason


@pytest.mark.django_db
def test_a_sqlite_write_lock_held_too_long_is_reported_busy(tmp_path, default_rules):
    db = tmp_path / "busy.sqlite3"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    SweepTarget.objects.create(name="busy-db", kind="sqlite", location=str(db), thresholds={"busy_timeout_ms": 50})
    try:
        result = sweeps.sweep("sqlite")
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert result["busy-db"]["breaches"] == ["sqlite_busy"]
    assert Incident.objects.get().diagnosis_code == "database_locked"


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_runs_on_a_real_worker_and_opens_the_incident(tmp_path, celery_worker, default_rules):
    db = tmp_path / "orders.sqlite3"
    writer, reader = bloated_sqlite(db)
    SweepTarget.objects.create(name="orders-db", kind="sqlite", location=str(db), thresholds={"wal_bytes": WAL_LIMIT})
    try:
        sweep_sqlite.apply_async(queue="sweeps")
        incident = wait_for(lambda: Incident.objects.filter(diagnosis_code="database_wal_bloat").first())
    finally:
        reader.close()
        writer.close()

    assert incident.labels["db_path"] == str(db)


@pytest.fixture
def postgres_url():
    """The real PostgreSQL cluster the suite runs with (its always-present ``postgres`` database)."""
    return os.environ["GRACE_PG_URL"].rsplit("/", 1)[0] + "/postgres"


@pytest.mark.django_db
def test_blocked_locks_and_long_transactions_in_postgres_are_breaches(postgres_url, default_rules):
    holder = psycopg.connect(postgres_url, autocommit=False)
    waiter = psycopg.connect(postgres_url, autocommit=False)
    holder.execute("SELECT pg_advisory_xact_lock(4242)")
    blocked = threading.Thread(target=lambda: waiter.execute("SELECT pg_advisory_xact_lock(4242)"))
    blocked.start()
    target = SweepTarget.objects.create(
        name="orders-pg",
        kind="postgres",
        location=postgres_url,
        thresholds={"long_transaction_seconds": 0, "blocked_locks": 1},
    )
    try:
        wait_for(lambda: "pg_blocked_locks" in sweeps.check_postgres_breaches(target))
        result = sweeps.sweep("postgres")
    finally:
        holder.rollback()
        blocked.join(10)
        waiter.rollback()
        holder.close()
        waiter.close()

    assert set(result["orders-pg"]["breaches"]) == {"pg_long_transaction", "pg_blocked_locks"}
    diagnosed = {i.labels["check"]: i.diagnosis_code for i in Incident.objects.all()}
    assert diagnosed == {"pg_long_transaction": "database_locked", "pg_blocked_locks": "database_locked"}


@pytest.mark.django_db
def test_an_unreachable_postgres_is_a_service_down_incident(default_rules):
    SweepTarget.objects.create(name="gone-pg", kind="postgres", location="postgres://grace@127.0.0.1:1/none")

    result = sweeps.sweep("postgres")

    assert result["gone-pg"]["breaches"] == ["postgres_down"]
    assert Incident.objects.get().diagnosis_code == "service_down"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(503 if self.path == "/down" else 200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_http_endpoints_are_checked_for_status_and_latency(http_server, default_rules):
    SweepTarget.objects.create(name="api-up", kind="http", location=f"{http_server}/up")
    SweepTarget.objects.create(name="api-down", kind="http", location=f"{http_server}/down")
    SweepTarget.objects.create(name="api-slow", kind="http", location=f"{http_server}/up", thresholds={"latency_ms": 0})
    SweepTarget.objects.create(name="api-gone", kind="http", location="http://127.0.0.1:1/")

    result = sweeps.sweep("http")

    assert result["api-up"]["breaches"] == []
    assert result["api-down"]["breaches"] == ["http_status"]
    assert result["api-slow"]["breaches"] == ["http_latency"]
    assert result["api-gone"]["breaches"] == ["http_status"]
    codes = {i.service: i.diagnosis_code for i in Incident.objects.all()}
    assert codes == {"api-down": "service_down", "api-slow": "latency_spike", "api-gone": "service_down"}


@pytest.mark.django_db
def test_host_thresholds_decide_what_is_a_breach(default_rules, settings):
    settings.GRACE_SWEEP_PERSIST_K = settings.GRACE_SWEEP_PERSIST_N = 1
    SweepTarget.objects.create(
        name="strict",
        kind="host",
        thresholds={"disk_used_percent": 0, "memory_used_percent": 0, "cpu_percent": 0, "load_per_cpu": 0},
    )
    SweepTarget.objects.create(
        name="lenient",
        kind="host",
        thresholds={"disk_used_percent": 101, "memory_used_percent": 101, "cpu_percent": 101, "load_per_cpu": 1e6},
    )

    result = sweeps.sweep("host")

    assert sorted(result["strict"]["breaches"]) == ["cpu", "disk", "load", "memory"]
    assert result["lenient"]["breaches"] == []
    codes = sorted(Incident.objects.values_list("diagnosis_code", flat=True))
    assert codes == ["disk_pressure", "high_cpu", "high_cpu", "memory_pressure"]


def _sweep_cpu(target: SweepTarget, *, busy: bool) -> dict:
    """One host sweep whose CPU check breaches (threshold 0) or not (threshold above 100 %); the other checks
    have thresholds this machine cannot reach, so its real load, memory and disk never count."""
    calm = {"disk_used_percent": 101, "memory_used_percent": 101, "load_per_cpu": 1e6}
    SweepTarget.objects.filter(pk=target.pk).update(thresholds={**calm, "cpu_percent": 0 if busy else 101})
    return sweeps.sweep("host")[target.name]


@pytest.mark.django_db
def test_a_host_breach_opens_an_incident_only_in_k_of_the_last_n_sweeps_and_resolves_below(default_rules, settings):
    settings.GRACE_SWEEP_PERSIST_K, settings.GRACE_SWEEP_PERSIST_N = 3, 5
    target = SweepTarget.objects.create(name="this-host", kind="host")
    cpu = Incident.objects.filter(labels__check="cpu")

    first, calm, again = (_sweep_cpu(target, busy=b) for b in (True, False, True))
    assert (first["pending"], calm["pending"], again["pending"]) == (["cpu"], [], ["cpu"])
    assert not cpu.exists()  # two busy sweeps of three: a busy minute, no incident

    third = _sweep_cpu(target, busy=True)
    incident = cpu.get()
    assert third["incidents"] == [incident.pk] and third["recent"]["cpu"] == "1011"
    assert incident.diagnosis_code == "high_cpu" and incident.status == "open"

    _sweep_cpu(target, busy=False)  # 3 of the last 5 still breach: it stays open
    incident.refresh_from_db()
    assert incident.status == "open"
    last = _sweep_cpu(target, busy=False)  # 2 of the last 5 breach
    incident.refresh_from_db()
    assert last["resolved"] == [incident.pk] and incident.status == "resolved"


@pytest.mark.django_db
def test_a_sqlite_sweep_is_not_held_back_by_the_host_persistence_rule(tmp_path, default_rules, settings):
    settings.GRACE_SWEEP_PERSIST_K, settings.GRACE_SWEEP_PERSIST_N = 3, 5
    db = tmp_path / "orders.sqlite3"
    writer, reader = bloated_sqlite(db)
    SweepTarget.objects.create(name="orders-db", kind="sqlite", location=str(db), thresholds={"wal_bytes": WAL_LIMIT})
    try:
        result = sweeps.sweep("sqlite")["orders-db"]
    finally:
        reader.close()
        writer.close()

    assert result["incidents"] and "recent" not in result


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"kind": "sqlite", "location": ""}, "resource"),
        ({"kind": "http", "location": "ftp://x"}, "location"),
        ({"kind": "postgres", "location": "mysql://x"}, "location"),
        ({"kind": "host", "thresholds": {"wal_bytes": 1}}, "thresholds"),
        ({"kind": "host", "thresholds": {"cpu_percent": "hot"}}, "thresholds"),
        ({"kind": "gopher"}, "kind"),
    ],
)
def test_invalid_sweep_targets_are_refused_naming_the_field(values, field):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as excinfo:
        SweepTarget.objects.create(name="bad", **values)

    assert field in excinfo.value.message_dict


@pytest.mark.django_db
def test_defaults_install_once_with_expiring_sweep_schedules_on_the_sweeps_queue():
    created = defaults.install()

    assert created > 20
    assert defaults.install() == 0
    tasks = PeriodicTask.objects.filter(task__startswith="incidents.sweep")
    assert tasks.count() == 4
    assert all(task.queue == "sweeps" and task.expire_seconds for task in tasks)
    assert SweepTarget.objects.filter(kind="host").exists()


@pytest.mark.django_db(transaction=True)
def test_beat_schedules_the_sweep_on_the_sweeps_queue_and_a_worker_opens_the_incident(
    tmp_path, celery_worker, default_rules
):
    from django_celery_beat.models import IntervalSchedule

    from tests.support.processes import start_beat

    db = tmp_path / "orders.sqlite3"
    writer, reader = bloated_sqlite(db)
    SweepTarget.objects.create(name="orders-db", kind="sqlite", location=str(db), thresholds={"wal_bytes": WAL_LIMIT})
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(task="incidents.sweep_sqlite").update(interval=every_second, expire_seconds=1)
    beat = start_beat(tmp_path)
    try:
        incident = wait_for(lambda: Incident.objects.filter(diagnosis_code="database_wal_bloat").first(), timeout=60)
    finally:
        beat.stop()
        reader.close()
        writer.close()

    assert incident.labels["db_path"] == str(db)
    assert PeriodicTask.objects.get(task="incidents.sweep_sqlite").queue == "sweeps"
