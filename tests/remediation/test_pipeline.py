"""The heal pipeline end to end, on a real Celery worker, Redis and a real SQLite target."""

import hashlib
import sqlite3
from pathlib import Path

import pytest

from approvals.models import AuditEvent
from incidents.choices import IncidentStatus
from incidents.models import Incident
from incidents.services import Signal, ingest, ingest_many
from remediation.choices import AttemptStatus, RunStatus
from remediation.models import ActionAttempt, ContractResult, HealRun, RunEvent, Snapshot
from remediation.services import transition
from tests.remediation.conftest import checkpoint_steps, make_playbook
from tests.support import inventory
from tests.support.race import run_together
from tests.support.runs import bloated_wal_db, wait_for, wait_for_run, wal_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def content_sha256(path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()


def _wal_incident(path, *, title="orders-db WAL is bloated", service="orders-db"):
    inventory.resource(service, "sqlite", path, name="db")
    return ingest(Signal(source="api", title=title, service=service, severity="warning")).incident


def test_a_wal_bloat_incident_is_checkpointed_and_its_contract_verified(celery_worker, allowed_root, wal_rule):
    db = allowed_root / "orders.sqlite3"
    keeper = bloated_wal_db(db)
    assert wal_bytes(db) > 2 * 1024 * 1024
    make_playbook("wal-checkpoint", "database_wal_bloat", checkpoint_steps())

    incident = _wal_incident(db)
    run = wait_for_run(incident.pk)

    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert wal_bytes(db) <= 1024 * 1024
    assert keeper.execute("SELECT count(*) FROM orders").fetchone()[0] == 3000  # nothing committed was lost
    result = ContractResult.objects.get(run=run)
    assert (result.field, result.passed) == ("wal_bytes", True)
    assert result.actual <= 1024 * 1024
    timeline = list(RunEvent.objects.filter(run=run).exclude(to_status="").values_list("to_status", flat=True))
    assert timeline == [
        "RECEIVED",
        "DIAGNOSED",
        "PLANNED",
        "APPROVED",
        "SNAPSHOTTED",
        "EXECUTING",
        "VERIFYING",
        "SUCCEEDED",
    ]
    assert AuditEvent.objects.filter(action="run.transition", object_id=str(run.pk)).count() == len(timeline) - 1
    wait_for(lambda: Incident.objects.get(pk=incident.pk).status == IncidentStatus.RESOLVED, what="incident resolved")
    keeper.close()


def test_a_batch_hand_off_starts_one_run_per_incident(celery_worker, allowed_root, wal_rule):
    make_playbook("wal-checkpoint", "database_wal_bloat", checkpoint_steps())
    keepers, signals = [], []
    for i in range(3):
        db = allowed_root / f"batch{i}.sqlite3"
        keepers.append(bloated_wal_db(db, rows=200))
        inventory.resource(f"batch-{i}", "sqlite", db)
        signals.append(Signal(source="api", title=f"WAL {i}", service=f"batch-{i}"))

    results = ingest_many(signals)
    runs = [wait_for_run(r.incident.pk) for r in results]

    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 3
    for keeper in keepers:
        keeper.close()


def test_a_contract_that_cannot_hold_rolls_back_to_the_snapshot(celery_worker, allowed_root, wal_rule):
    db = allowed_root / "ledger.sqlite3"
    keeper = bloated_wal_db(db, rows=500)
    impossible = [{"field": "wal_bytes", "op": "<", "value": 0}]
    make_playbook("wal-impossible", "database_wal_bloat", checkpoint_steps(contract=impossible))

    run = wait_for_run(_wal_incident(db, title="ledger WAL grows").pk)

    assert run.status == RunStatus.ROLLED_BACK, run.status_reason
    assert "contract not met" in RunEvent.objects.filter(run=run, to_status="ROLLING_BACK").get().note
    snap = Snapshot.objects.get(run=run)
    assert snap.restored_at is not None
    backup = Path(snap.path) / next(iter(snap.manifest["files"]))
    # The backup API restores pages, not the file header (journal mode, change counter): compare content.
    assert content_sha256(db) == content_sha256(backup)
    assert keeper.execute("SELECT count(*) FROM orders").fetchone()[0] == 500
    assert ActionAttempt.objects.get(run=run, phase="rollback").status == AttemptStatus.SUCCEEDED
    keeper.close()


def test_an_unknown_diagnosis_is_escalated_and_never_acted_on(celery_worker, api_client, admin_user):
    incident = ingest(Signal(source="api", title="something odd", service="billing", environment="staging")).incident
    assert (incident.diagnosis_code, incident.status) == ("unknown", IncidentStatus.ESCALATED)
    assert not HealRun.objects.filter(incident=incident).exists()

    api_client.force_authenticate(admin_user)
    response = api_client.post(f"/api/incidents/{incident.pk}/heal/", {}, format="json")
    assert response.status_code == 202, response.json()
    run = wait_for_run(incident.pk)

    assert run.status == RunStatus.ESCALATED
    assert "never acted on" in run.status_reason
    assert not ActionAttempt.objects.filter(run=run).exists()


def test_a_label_naming_no_resource_of_the_service_escalates_and_acts_on_nothing(celery_worker, allowed_root, wal_rule):
    make_playbook("wal-checkpoint", "database_wal_bloat", checkpoint_steps())
    inventory.resource("x", "sqlite", allowed_root / "x.sqlite3", name="db")
    incident = ingest(
        Signal(source="api", title="WAL of ../../etc is big", service="x", labels={"resource": "../../etc/passwd"})
    ).incident

    run = wait_for_run(incident.pk)

    assert run.status == RunStatus.ESCALATED
    assert "names no sqlite resource of service x" in run.status_reason
    assert not ActionAttempt.objects.filter(run=run).exists()


def test_two_workers_racing_one_transition_make_exactly_one(db_workers=8):
    incident = Incident.objects.create(
        fingerprint="race", source="api", title="race", first_seen="2026-01-01T00:00Z", last_seen="2026-01-01T00:00Z"
    )
    run = HealRun.objects.create(incident=incident, status=RunStatus.SNAPSHOTTED)
    wins = run_together(
        lambda: transition(run.pk, RunStatus.SNAPSHOTTED, RunStatus.EXECUTING, advance=False), db_workers
    )

    assert sorted(wins) == [False] * (db_workers - 1) + [True]
    assert RunEvent.objects.filter(run=run, to_status=RunStatus.EXECUTING).count() == 1


def test_a_dry_run_plans_and_gates_but_executes_nothing(celery_worker, api_client, admin_user, allowed_root, wal_rule):
    db = allowed_root / "dry.sqlite3"
    keeper = bloated_wal_db(db, rows=300)
    before = wal_bytes(db)
    make_playbook("wal-checkpoint", "database_wal_bloat", checkpoint_steps())
    inventory.resource("dry", "sqlite", db)
    incident = Incident.objects.create(
        fingerprint="dry",
        source="api",
        title="dry WAL",
        service="dry",
        environment="staging",
        diagnosis_code="database_wal_bloat",
        first_seen="2026-01-01T00:00Z",
        last_seen="2026-01-01T00:00Z",
    )
    api_client.force_authenticate(admin_user)

    response = api_client.post(f"/api/incidents/{incident.pk}/heal/", {"dry_run": True}, format="json")
    assert response.status_code == 202, response.json()
    run = wait_for_run(incident.pk)

    assert run.pk == response.json()["id"]
    assert run.status == RunStatus.SIMULATED
    assert "dry run" in run.status_reason and "tier 1" in run.status_reason
    assert run.plan["steps"][0]["params"]["path"] == str(db)
    assert wal_bytes(db) == before
    assert not ActionAttempt.objects.filter(run=run).exists()
    keeper.close()


def test_cancel_is_allowed_before_execution_and_refused_after(api_client, admin_user):
    incident = Incident.objects.create(
        fingerprint="c", source="api", title="c", first_seen="2026-01-01T00:00Z", last_seen="2026-01-01T00:00Z"
    )
    waiting = HealRun.objects.create(incident=incident, status=RunStatus.AWAITING_APPROVAL)
    api_client.force_authenticate(admin_user)

    ok = api_client.post(f"/api/runs/{waiting.pk}/cancel/")
    HealRun.objects.filter(pk=waiting.pk).update(status=RunStatus.EXECUTING, finished_at=None)
    refused = api_client.post(f"/api/runs/{waiting.pk}/cancel/")

    assert ok.status_code == 200 and ok.json()["status"] == "CANCELLED"
    assert refused.status_code == 409
    assert "has not started executing" in refused.json()["detail"]
