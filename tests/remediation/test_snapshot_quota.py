"""Snapshot storage is bounded: per canonical target, per host in total, and by the free space it must leave.
Past a limit the snapshot is refused before a byte is copied and the run is BLOCKED with the limit named.

The stages run in this process (the same functions the stage tasks call) so each test sets its own limits;
tests/remediation/test_snapshot_quota.py::test_a_refused_snapshot_is_shown_on_the_run_through_the_worker goes
through a real worker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from incidents.services import Signal, ingest
from remediation import execution, pipeline, snapshots
from remediation.choices import RunStatus
from remediation.models import ActionAttempt, HealRun, Snapshot
from tests.remediation.conftest import checkpoint_steps, make_playbook
from tests.support import inventory
from tests.support.processes import start_worker
from tests.support.runs import bloated_wal_db, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def own_snapshot_dir(settings, tmp_path):
    settings.GRACE_SNAPSHOT_DIR = tmp_path / "snapshots"


@pytest.fixture
def wal_playbook(wal_rule):
    return make_playbook("wal-checkpoint", "database_wal_bloat", checkpoint_steps())


def approved_run(service: str) -> HealRun:
    """A new incident for ``service`` planned and gated (tier 1) in this process: the run waits in APPROVED."""
    title = f"{service} WAL #{HealRun.objects.count()}"
    incident = ingest(Signal(source="api", title=title, service=service)).incident
    run = pipeline.start_run(incident.pk)
    pipeline.plan(run.pk)
    pipeline.gate(run.pk)
    run = HealRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.APPROVED, run.status_reason
    return run


def snapshot(run: HealRun) -> HealRun:
    execution.take_snapshots(run)
    return HealRun.objects.get(pk=run.pk)


def snapshot_dirs(run: HealRun) -> list[Path]:
    return sorted(snapshots.root().glob(f"run-{run.pk}-step-*"))


@pytest.fixture
def two_databases(allowed_root, wal_playbook):
    keepers = []
    paths = {}
    for name in ("orders", "billing"):
        db = allowed_root / f"{name}.sqlite3"
        keepers.append(bloated_wal_db(db, rows=200))
        inventory.resource(name, "sqlite", db)
        paths[name] = db
    yield paths
    for keeper in keepers:
        keeper.close()


def test_a_target_past_its_quota_is_refused_before_anything_is_copied_and_others_still_snapshot(
    settings, two_databases
):
    first = snapshot(approved_run("orders"))
    assert first.status == RunStatus.SNAPSHOTTED
    held = Snapshot.objects.get(run=first).size_bytes
    assert held > 100_000
    # Room for what orders holds, not for another copy of it.
    settings.GRACE_SNAPSHOT_TARGET_QUOTA = held + snapshots.estimate(str(two_databases["orders"])) - 1

    second = snapshot(approved_run("orders"))
    other = snapshot(approved_run("billing"))

    assert second.status == RunStatus.BLOCKED
    assert "GRACE_SNAPSHOT_TARGET_QUOTA" in second.status_reason
    assert str(two_databases["orders"].resolve()) in second.status_reason
    assert not Snapshot.objects.filter(run=second).exists() and snapshot_dirs(second) == []
    assert not ActionAttempt.objects.filter(run=second).exists()  # nothing was changed either
    assert other.status == RunStatus.SNAPSHOTTED  # the quota is per target


def test_one_file_named_two_ways_is_one_target_for_its_quota(settings, allowed_root, wal_playbook):
    db = allowed_root / "shared.sqlite3"
    keeper = bloated_wal_db(db, rows=200)
    (allowed_root / "alias").symlink_to(allowed_root)
    inventory.resource("shop", "sqlite", db)
    inventory.resource("shop-mirror", "sqlite", allowed_root / "alias" / "." / "shared.sqlite3")
    try:
        first = snapshot(approved_run("shop"))
        settings.GRACE_SNAPSHOT_TARGET_QUOTA = Snapshot.objects.get(run=first).size_bytes + 1

        second = snapshot(approved_run("shop-mirror"))
    finally:
        keeper.close()

    assert second.target == first.target == f"local:{db.resolve()}"
    assert second.status == RunStatus.BLOCKED and "GRACE_SNAPSHOT_TARGET_QUOTA" in second.status_reason


def test_the_total_quota_counts_every_target_of_this_host_until_retention_purges_them(settings, two_databases):
    first = snapshot(approved_run("orders"))
    # Room for billing alone, not beside what orders holds.
    settings.GRACE_SNAPSHOT_TOTAL_QUOTA = (
        Snapshot.objects.get(run=first).size_bytes + snapshots.estimate(str(two_databases["billing"])) - 1
    )

    refused = snapshot(approved_run("billing"))
    assert refused.status == RunStatus.BLOCKED and "GRACE_SNAPSHOT_TOTAL_QUOTA" in refused.status_reason

    Snapshot.objects.filter(run=first).update(purged_at=first.created_at)  # retention removed its files
    assert snapshot(approved_run("billing")).status == RunStatus.SNAPSHOTTED


def test_a_snapshot_that_would_leave_too_little_free_disk_is_refused(settings, two_databases, tmp_path):
    settings.GRACE_SNAPSHOT_MIN_FREE = shutil.disk_usage(tmp_path).free  # any copy at all would go below it

    run = snapshot(approved_run("orders"))

    assert run.status == RunStatus.BLOCKED
    assert "GRACE_SNAPSHOT_MIN_FREE" in run.status_reason and snapshot_dirs(run) == []


def test_a_snapshot_larger_than_estimated_is_removed_when_it_passes_the_quota(settings, two_databases, monkeypatch):
    """The target grew between the estimate and the copy: the copy is checked again and removed."""
    run = approved_run("orders")
    settings.GRACE_SNAPSHOT_TARGET_QUOTA = snapshots.estimate(str(two_databases["orders"])) // 4
    monkeypatch.setattr(snapshots, "estimate", lambda target, stop_after=None: 1)  # the estimate was wrong

    run = snapshot(run)

    assert run.status == RunStatus.BLOCKED and "GRACE_SNAPSHOT_TARGET_QUOTA" in run.status_reason
    assert snapshot_dirs(run) == [] and not Snapshot.objects.filter(run=run).exists()


def test_a_refused_snapshot_is_shown_on_the_run_through_the_worker(tmp_path, two_databases, api_client, admin_user):
    worker, _ = start_worker(tmp_path, GRACE_SNAPSHOT_MIN_FREE="1000TiB")
    try:
        incident = ingest(Signal(source="api", title="orders WAL", service="orders")).incident
        run = wait_for_run(incident.pk)
    finally:
        worker.stop()
    api_client.force_authenticate(admin_user)

    shown = api_client.get(f"/api/runs/{run.pk}/").json()

    assert shown["status"] == RunStatus.BLOCKED
    assert "snapshot of step 0 refused: snapshot disk" in shown["status_reason"]
    assert not ActionAttempt.objects.filter(run=run).exists()
