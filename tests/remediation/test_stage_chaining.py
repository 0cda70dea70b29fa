"""A stage task goes on with the stages that follow in the same task when its worker may run them: every
stage still enters by its own claim and writes its own timeline row and audit entry, and messages delivered
again change nothing (real worker, Redis and SQLite targets; the in-process cases call the same code the
worker's tasks run)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from approvals.models import AuditEvent
from grace_site.celery import app
from incidents.choices import IncidentStatus
from incidents.models import Incident
from incidents.services import Signal, ingest
from learning.models import OutcomeRecord
from remediation import tasks
from remediation.choices import RunStatus
from remediation.models import ActionAttempt, Agent, HealRun, RunEvent, Snapshot
from tests.conftest import QUEUES
from tests.remediation.conftest import checkpoint_steps, make_playbook
from tests.support import inventory
from tests.support.race import run_together
from tests.support.runs import bloated_wal_db, wait_for, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)

S = RunStatus
TIER1_TIMELINE = ["RECEIVED", "DIAGNOSED", "PLANNED", "APPROVED", "SNAPSHOTTED", "EXECUTING", "VERIFYING", "SUCCEEDED"]
SHARED = frozenset(QUEUES)


@pytest.fixture
def wal_target(allowed_root, wal_rule):
    """A service with a SQLite database whose WAL is bloated, and a tier-1 checkpoint playbook for it."""
    db = allowed_root / "orders.sqlite3"
    keeper = bloated_wal_db(db, rows=300)
    make_playbook("wal-checkpoint", "database_wal_bloat", checkpoint_steps())
    yield db
    keeper.close()


def raise_incident(db, *, host: str = "") -> Incident:
    inventory.resource("orders-db", "sqlite", db, name="db", host=host)
    return ingest(Signal(source="api", title="orders-db WAL is bloated", service="orders-db")).incident


def run_stage(name: str, object_id: int, *, queues=SHARED, long: bool, soft_limit: float = 60):
    return tasks.run_stage(name, object_id, queues=queues, long=long, soft_limit=soft_limit)


def sent(published, run: HealRun) -> list[tuple[str, str]]:
    return [(name, queue) for name, args, queue in published if args == [run.pk]]


def processed(worker: str) -> dict[str, int]:
    stats = app.control.inspect([worker], timeout=5).stats() or {}
    return dict(stats.get(worker, {}).get("total", {}))


def test_a_tier1_run_on_this_machine_takes_two_tasks_and_writes_every_timeline_row(celery_worker, wal_target):
    before = processed(celery_worker)

    incident = raise_incident(wal_target)
    run = wait_for_run(incident.pk)
    wait_for(lambda: Incident.objects.get(pk=incident.pk).status == IncidentStatus.RESOLVED, what="outcome recorded")

    assert run.status == S.SUCCEEDED, run.status_reason
    timeline = list(RunEvent.objects.filter(run=run).exclude(to_status="").values_list("to_status", flat=True))
    assert timeline == TIER1_TIMELINE
    assert AuditEvent.objects.filter(action="run.transition", object_id=str(run.pk)).count() == len(timeline) - 1
    ran = {name: count - before.get(name, 0) for name, count in processed(celery_worker).items()}
    # start_run plans and gates; snapshot_run (the stage time limits) executes, verifies and records the outcome
    assert {name: n for name, n in ran.items() if name.startswith("remediation.") and n} == {
        "remediation.start_run": 1,
        "remediation.snapshot_run": 1,
    }


def test_stages_run_on_in_one_task_enter_by_their_claims_and_messages_delivered_again_change_nothing(
    wal_target, published
):
    incident = raise_incident(wal_target)
    published.clear()  # intake's hand-off: this test runs the stages itself

    run_stage("remediation.start_run", incident.pk, long=False)
    run = HealRun.objects.get(incident=incident)

    assert run.status == S.APPROVED  # planned and gated in the short task; the snapshot needs the stage limits
    assert sent(published, run) == [("remediation.snapshot_run", "heal.local")]

    run_stage("remediation.snapshot_run", run.pk, long=True, soft_limit=1200)

    run.refresh_from_db()
    assert run.status == S.SUCCEEDED, run.status_reason
    assert sent(published, run) == [("remediation.snapshot_run", "heal.local")]  # nothing more went to the broker
    assert Incident.objects.get(pk=incident.pk).status == IncidentStatus.RESOLVED
    rows = {
        "timeline": RunEvent.objects.filter(run=run).count(),
        "audit": AuditEvent.objects.count(),
        "attempts": ActionAttempt.objects.filter(run=run).count(),
        "snapshots": Snapshot.objects.filter(run=run).count(),
        "outcomes": OutcomeRecord.objects.filter(run=run).count(),
    }
    timeline = list(RunEvent.objects.filter(run=run).exclude(to_status="").values_list("to_status", flat=True))
    assert timeline == TIER1_TIMELINE
    assert (rows["attempts"], rows["snapshots"], rows["outcomes"]) == (1, 1, 1)

    # Every stage's message delivered again (a redelivery after a lost acknowledgement, a reaper's re-send):
    for name in tasks.STAGES:
        object_id = incident.pk if name == "remediation.start_run" else run.pk
        run_stage(
            name,
            object_id,
            long=name
            in (
                "remediation.snapshot_run",
                "remediation.execute_run",
                "remediation.verify_run",
                "remediation.rollback_run",
            ),
        )

    assert HealRun.objects.get(pk=run.pk).status == S.SUCCEEDED
    assert rows == {
        "timeline": RunEvent.objects.filter(run=run).count(),
        "audit": AuditEvent.objects.count(),
        "attempts": ActionAttempt.objects.filter(run=run).count(),
        "snapshots": Snapshot.objects.filter(run=run).count(),
        "outcomes": OutcomeRecord.objects.filter(run=run).count(),
    }


def test_a_hosts_stages_run_on_only_in_that_hosts_agent(wal_target, published):
    now = timezone.now()
    Agent.objects.create(
        name="agent@host-x", host="host-x", queues=["heal.local.host-x"], started_at=now, last_seen=now
    )
    incident = raise_incident(wal_target, host="host-x")
    published.clear()

    run_stage("remediation.start_run", incident.pk, long=False)
    run = HealRun.objects.get(incident=incident)
    assert run.status == S.APPROVED
    assert sent(published, run) == [("remediation.snapshot_run", "heal.local.host-x")]
    published.clear()

    # host-x's light agent (only its own queue): snapshot, execute and verify, then the outcome goes to the
    # shared queue, which it does not consume.
    run_stage("remediation.snapshot_run", run.pk, queues=frozenset({"heal.local.host-x"}), long=True, soft_limit=1200)

    run.refresh_from_db()
    assert run.status == S.SUCCEEDED, run.status_reason
    assert sent(published, run) == [("remediation.record_outcome", "heal.local")]
    assert not OutcomeRecord.objects.filter(run=run).exists()


def test_a_task_past_its_share_of_the_time_limit_sends_the_next_stage(wal_target, published):
    incident = raise_incident(wal_target)
    published.clear()

    run_stage("remediation.start_run", incident.pk, long=False, soft_limit=0)  # no time left to run on

    run = HealRun.objects.get(incident=incident)
    assert run.status == S.DIAGNOSED
    assert sent(published, run) == [("remediation.plan_run", "heal.local")]


def test_deliveries_racing_into_the_execute_stage_run_its_action_once(wal_target, published):
    incident = raise_incident(wal_target)
    run_stage("remediation.start_run", incident.pk, long=False)
    run = HealRun.objects.get(incident=incident)
    tasks.STAGES["remediation.snapshot_run"](run.pk)  # as its own task: the execute stage is sent, not run
    assert HealRun.objects.get(pk=run.pk).status == S.SNAPSHOTTED

    run_together(lambda: tasks.STAGES["remediation.execute_run"](run.pk), 4)

    assert HealRun.objects.get(pk=run.pk).status == S.VERIFYING
    assert ActionAttempt.objects.filter(run=run).count() == 1
    assert RunEvent.objects.filter(run=run, to_status=S.EXECUTING).count() == 1
    assert RunEvent.objects.filter(run=run, to_status=S.VERIFYING).count() == 1
    assert AuditEvent.objects.filter(action="action.execute.started", data__run=run.pk).count() == 1
