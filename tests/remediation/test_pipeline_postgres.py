"""A database_locked incident heals through the pipeline: a real blocking PostgreSQL session is
terminated by a real worker and the blocked statement completes."""

import json
import os
import threading
import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from incidents.models import DiagnosisRule
from incidents.services import Signal, ingest
from remediation.choices import RunStatus
from remediation.models import ActionAttempt
from tests.remediation.conftest import make_playbook
from tests.support import inventory
from tests.support.processes import PG_TARGETS_FILE
from tests.support.runs import wait_for, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def databases():
    """Make throwaway databases (each with its own owner role and an accounts table), registered as
    PostgreSQL targets by name; returns each one's application DSN."""
    url = os.environ.get("GRACE_PG_URL")
    if not url:
        pytest.fail("GRACE_PG_URL is not set: run the tests through scripts/with-services.sh (make test)")
    admin_url = make_conninfo(url, dbname="postgres")
    made: list[tuple[str, str]] = []
    targets: dict[str, str] = {}

    def make(name: str) -> str:
        suffix = uuid.uuid4().hex[:8]
        dbname, role = f"{name}_{suffix}", f"{name}_app_{suffix}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE ROLE "{role}" LOGIN')
            admin.execute(f'CREATE DATABASE "{dbname}" OWNER "{role}"')
        made.append((dbname, role))
        app_dsn = make_conninfo(url, dbname=dbname, user=role)
        with psycopg.connect(app_dsn, autocommit=True) as app:
            app.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
            app.execute("INSERT INTO accounts VALUES (1, 100)")
        targets[name] = make_conninfo(url, dbname=dbname)
        PG_TARGETS_FILE.write_text(json.dumps(targets))
        return app_dsn

    yield make
    PG_TARGETS_FILE.unlink(missing_ok=True)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for dbname, role in made:
            admin.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
            admin.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def orders_db(databases):
    return databases("orders")


def _block(dsn: str, application: str) -> psycopg.Connection:
    """A session holding a row lock, idle in transaction."""
    blocker = psycopg.connect(dsn, application_name=application)
    blocker.execute("UPDATE accounts SET balance = 0 WHERE id = 1")
    return blocker


def test_a_lock_blocker_is_terminated_and_the_blocked_statement_completes(celery_worker, orders_db):
    DiagnosisRule.objects.create(name="test: locked", code="database_locked", position=1, title_regex=r"(?i)locked")
    make_playbook(
        "pg-unblock",
        "database_locked",
        [
            {
                "action": "postgres.terminate_blockers",
                "params": {"min_blocked_seconds": 1},
                "contract": [{"field": "longest_block_seconds", "op": "<", "value": 1, "within": 15}],
            }
        ],
    )
    blocker = _block(orders_db, "batch-job")
    victim_result: list = []

    def victim():
        with psycopg.connect(orders_db, application_name="checkout") as conn:
            conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
            conn.commit()
            victim_result.append(conn.execute("SELECT balance FROM accounts WHERE id = 1").fetchone()[0])

    thread = threading.Thread(target=victim, daemon=True)
    thread.start()
    with psycopg.connect(orders_db, autocommit=True) as watcher:
        wait_for(
            lambda: watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'checkout' AND wait_event_type = 'Lock'"
                " AND now() - state_change > interval '1.2 seconds'"
            ).fetchone(),
            timeout=20,
            what="checkout to be blocked for over a second",
        )

    inventory.resource("orders-db", "postgres", "orders")
    incident = ingest(Signal(source="api", title="orders-db locked", service="orders-db")).incident
    run = wait_for_run(incident.pk)
    thread.join(20)

    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert victim_result == [101]  # the blocker's uncommitted change was rolled back with its session
    result = ActionAttempt.objects.get(run=run).result
    assert result["terminated"][0]["application_name"] == "batch-job"
    with pytest.raises(psycopg.OperationalError):
        blocker.execute("SELECT 1")


def test_an_alert_claiming_another_database_terminates_nothing_there(celery_worker, databases):
    """The blocker termination acts on the incident's service's own database, whatever the alert names."""
    DiagnosisRule.objects.create(name="test: locked", code="database_locked", position=1, title_regex=r"(?i)locked")
    make_playbook(
        "pg-unblock",
        "database_locked",
        [{"action": "postgres.terminate_blockers", "params": {"min_blocked_seconds": 1}}],
    )
    databases("orders")
    billing = databases("billing")
    inventory.resource("orders-db", "postgres", "orders", name="db")
    inventory.resource("orders-db", "postgres", "orders", name="replica")
    inventory.resource("billing-db", "postgres", "billing", name="db")
    blocker = _block(billing, "billing-batch")
    pid = blocker.info.backend_pid

    runs = [
        wait_for_run(
            ingest(Signal(source="api", title=f"orders-db locked {i}", service="orders-db", labels=labels)).incident.pk
        )
        for i, labels in enumerate([{"pg_target": "billing"}, {"resource": "billing"}, {"target": "billing"}])
    ]

    for run in runs:
        assert run.status == RunStatus.ESCALATED, run.status_reason
        assert not ActionAttempt.objects.filter(run=run).exists()
    assert blocker.execute("SELECT pg_backend_pid()").fetchone()[0] == pid  # the billing session survived
    blocker.close()


@pytest.fixture
def signal_only_target(orders_db):
    """GRACE's target connects as a role with pg_signal_backend only: other roles' activity is hidden."""
    from psycopg.conninfo import conninfo_to_dict

    url = make_conninfo(os.environ["GRACE_PG_URL"], dbname="postgres")
    role = f"grace_sig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE pg_signal_backend')
    PG_TARGETS_FILE.write_text(
        json.dumps({"orders": make_conninfo(url, dbname=conninfo_to_dict(orders_db)["dbname"], user=role)})
    )
    yield
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP ROLE "{role}"')


def test_a_role_that_cannot_see_the_blocker_blocks_the_run_instead_of_succeeding(
    celery_worker, orders_db, signal_only_target
):
    DiagnosisRule.objects.create(name="test: locked", code="database_locked", position=1, title_regex=r"(?i)locked")
    make_playbook(
        "pg-unblock",
        "database_locked",
        [
            {
                "action": "postgres.terminate_blockers",
                "params": {"min_blocked_seconds": 1},
                "contract": [{"field": "longest_block_seconds", "op": "<", "value": 1, "within": 15}],
            }
        ],
    )
    inventory.resource("orders-db", "postgres", "orders")
    blocker = _block(orders_db, "batch-job")
    try:
        incident = ingest(Signal(source="api", title="orders-db locked", service="orders-db")).incident
        run = wait_for_run(incident.pk)

        assert run.status == RunStatus.BLOCKED, run.status_reason
        assert "cannot observe" in run.status_reason and "pg_read_all_stats" in run.status_reason
        assert blocker.execute("SELECT 1").fetchone() == (1,)  # nothing was signalled
    finally:
        blocker.close()
