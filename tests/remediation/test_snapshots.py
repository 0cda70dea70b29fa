"""Safe-hold snapshots: digests verified before any restore, operator rollback, retention."""

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from approvals.models import AuditEvent
from incidents.models import Incident
from incidents.services import Signal, ingest
from learning.models import OutcomeRecord, PlaybookStatistics
from remediation import snapshots
from remediation.choices import RunStatus
from remediation.models import Snapshot
from tests.remediation.conftest import checkpoint_steps, make_playbook
from tests.remediation.test_pipeline import content_sha256
from tests.support import inventory
from tests.support.runs import bloated_wal_db, wait_for, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def healed_run(celery_worker, allowed_root, wal_rule):
    db = allowed_root / "healed.sqlite3"
    keeper = bloated_wal_db(db, rows=400)
    make_playbook("wal-checkpoint", "database_wal_bloat", checkpoint_steps())
    inventory.resource("h", "sqlite", db)
    incident = ingest(Signal(source="api", title="healed WAL", service="h")).incident
    run = wait_for_run(incident.pk)
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    yield run, db
    keeper.close()


def test_an_operator_rolls_a_finished_run_back_from_its_verified_snapshot(healed_run, api_client, admin_user):
    run, db = healed_run
    snap = Snapshot.objects.get(run=run)
    keeper = sqlite3.connect(db)
    keeper.execute("INSERT INTO orders (body) VALUES (x'00')")  # a change made after the heal
    keeper.commit()
    api_client.force_authenticate(admin_user)

    response = api_client.post(f"/api/runs/{run.pk}/rollback/")
    run = wait_for_run(run.incident_id, statuses=(RunStatus.ROLLED_BACK, RunStatus.FAILED, RunStatus.ESCALATED))

    assert response.status_code == 202, response.json()
    assert run.status == RunStatus.ROLLED_BACK, run.status_reason
    assert content_sha256(db) == content_sha256(Path(snap.path) / next(iter(snap.manifest["files"])))
    assert AuditEvent.objects.filter(action="run.transition", actor="root", object_id=str(run.pk)).exists()
    keeper.close()


def test_an_operator_rollback_counts_the_run_as_rolled_back_and_reopens_its_incident(
    healed_run, api_client, admin_user
):
    run, _ = healed_run
    wait_for(lambda: OutcomeRecord.objects.filter(run=run).exists(), what="the success recorded")
    stats = PlaybookStatistics.objects.get(playbook=run.playbook.name)
    assert (stats.successes, stats.rollbacks) == (1, 0)
    api_client.force_authenticate(admin_user)

    api_client.post(f"/api/runs/{run.pk}/rollback/")
    wait_for_run(run.incident_id, statuses=(RunStatus.ROLLED_BACK,))
    record = wait_for(
        lambda: OutcomeRecord.objects.filter(run=run, outcome="rolled_back").first(),
        what="the outcome revised",
        fresh_reads=True,
    )

    stats.refresh_from_db()
    assert (stats.attempts, stats.successes, stats.rollbacks) == (1, 0, 1)
    assert record.counted
    incident = Incident.objects.get(pk=run.incident_id)
    assert incident.status == "escalated" and "rolled back by an operator" in incident.status_reason
    revised = AuditEvent.objects.get(action="learning.outcome_revised")
    assert revised.data["outcome"] == {"before": "succeeded", "after": "rolled_back"}


def test_a_snapshot_altered_on_disk_refuses_the_rollback_and_says_why(healed_run, api_client, admin_user):
    run, _ = healed_run
    snap = Snapshot.objects.get(run=run)
    backup = Path(snap.path) / next(iter(snap.manifest["files"]))
    backup.write_bytes(backup.read_bytes()[:-1] + b"\x01")
    api_client.force_authenticate(admin_user)

    response = api_client.post(f"/api/runs/{run.pk}/rollback/")

    assert response.status_code == 409
    assert "do not match the manifest" in response.json()["detail"]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


def test_retention_purges_old_snapshot_files_and_a_purged_snapshot_cannot_be_restored(
    healed_run, api_client, admin_user
):
    run, _ = healed_run
    snap = Snapshot.objects.get(run=run)
    Snapshot.objects.filter(pk=snap.pk).update(created_at=timezone.now() - timedelta(days=30))

    purged = snapshots.purge_expired()
    api_client.force_authenticate(admin_user)
    response = api_client.post(f"/api/runs/{run.pk}/rollback/")

    snap.refresh_from_db()
    assert purged == 1
    assert snap.purged_at is not None and not Path(snap.path).exists()
    assert response.status_code == 409 and "purged by retention" in response.json()["detail"]
    assert snapshots.purge_expired() == 0  # idempotent


def test_the_manifest_records_every_file_and_detects_a_missing_one(tmp_path):
    (tmp_path / "a").write_bytes(b"alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"beta")
    manifest = snapshots.build_manifest(tmp_path)
    snap = Snapshot(path=str(tmp_path), manifest=manifest, step_index=0)

    snapshots.verify(snap)  # intact: no error
    (tmp_path / "sub" / "b").unlink()

    assert set(manifest["files"]) == {"a", "sub/b"} and manifest["bytes"] == 9
    with pytest.raises(snapshots.SnapshotIntegrityError, match="sub/b"):
        snapshots.verify(snap)
