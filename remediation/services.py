"""Run state changes: the only way a HealRun's status moves.

Each transition is a compare-and-set UPDATE on the current status, a timeline
row and an audit event in one transaction; the next stage is dispatched on
commit, so a worker never sees a state that was not committed.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.db import transaction
from django.utils import timezone

from approvals import audit
from remediation.choices import Family, RunStatus
from remediation.models import HealRun, RunEvent

logger = logging.getLogger(__name__)

# Stage tasks by the status a run must be in for them to act.
STAGE_TASKS = {
    RunStatus.DIAGNOSED: "remediation.plan_run",
    RunStatus.PLANNED: "remediation.gate_run",
    RunStatus.APPROVED: "remediation.snapshot_run",
    RunStatus.SNAPSHOTTED: "remediation.execute_run",
    RunStatus.EXECUTING: "remediation.execute_run",
    RunStatus.VERIFYING: "remediation.verify_run",
    RunStatus.ROLLING_BACK: "remediation.rollback_run",
}
# Stages that touch the target run on the queue of its family.
ACTION_STAGES = {
    RunStatus.APPROVED,
    RunStatus.SNAPSHOTTED,
    RunStatus.EXECUTING,
    RunStatus.VERIFYING,
    RunStatus.ROLLING_BACK,
}


def queue_for(run: HealRun | None, status: str) -> str:
    if run is not None and status in ACTION_STAGES and run.family and run.family != Family.LOCAL:
        return "heal.cloud"
    return "heal.local"


def send(task: str, object_id: int, *, queue: str = "heal.local") -> None:
    """Publish a pipeline task by name. Pipeline tasks report through the run's timeline, so the
    sender subscribes to no result."""
    current_app.send_task(task, args=[object_id], queue=queue, ignore_result=True)


def dispatch(run_id: int, status: str, *, family: str = "") -> None:
    """Send the task that moves a run on from ``status`` (after the current transaction commits)."""
    task = STAGE_TASKS.get(status)
    if task is None:
        return
    queue = "heal.cloud" if status in ACTION_STAGES and family and family != Family.LOCAL else "heal.local"
    transaction.on_commit(lambda: send(task, run_id, queue=queue))


def transition(
    run_id: int,
    expected: str,
    new: str,
    *,
    note: str = "",
    data: dict | None = None,
    actor: Any = None,
    reason: str | None = None,
    fields: dict | None = None,
    advance: bool = True,
    family: str | None = None,
    guard: dict | None = None,
) -> bool:
    """Move run ``run_id`` from ``expected`` to ``new``; False when another worker got there first."""
    with transaction.atomic(savepoint=False):
        now = timezone.now()
        updates: dict[str, Any] = {"status": new, "heartbeat_at": now, "reaper_tries": 0, **(fields or {})}
        if reason is not None:
            updates["status_reason"] = reason[:2000]
        if new in RunStatus.TERMINAL:
            updates["finished_at"] = now
        claimed = HealRun.objects.filter(pk=run_id, status=expected, **(guard or {})).update(**updates)
        if not claimed:
            return False
        RunEvent.objects.create(
            run_id=run_id, from_status=expected, to_status=new, note=(note or reason or "")[:4000], data=data or {}
        )
        audit.record(
            "run.transition",
            actor=actor,
            obj=("remediation.healrun", run_id),
            data={"from": expected, "to": new, "note": note or reason or "", **({"data": data} if data else {})},
        )
        if new in RunStatus.TERMINAL:
            # robust: the run has ended either way; a lost outcome hand-off is sent again by the reaper.
            transaction.on_commit(lambda: send("remediation.record_outcome", run_id), robust=True)
        elif advance:
            if family is None and new in ACTION_STAGES:
                family = HealRun.objects.filter(pk=run_id).values_list("family", flat=True).first()
            dispatch(run_id, new, family=family or "")
    return True


def note(run_id: int, text: str, *, data: dict | None = None, actor: Any = None, action: str = "run.note") -> None:
    """A timeline entry that is not a transition (a step started, a retry, a breaker...)."""
    with transaction.atomic(savepoint=False):
        RunEvent.objects.create(run_id=run_id, note=text[:4000], data=data or {})
        audit.record(action, actor=actor, obj=("remediation.healrun", run_id), data={"note": text, **(data or {})})


def heartbeat(run_id: int) -> None:
    """Progress within a stage. The reaper's count is cleared only by a transition, so a stage that
    keeps failing part-way still runs out of tries; a worker re-entering after the reaper compares the
    heartbeat, so a live worker's heartbeat makes that re-entry fail."""
    HealRun.objects.filter(pk=run_id).update(heartbeat_at=timezone.now())


def claim(run: HealRun) -> bool:
    """Enter a stage as the only worker: compare-and-set on the heartbeat and reaper count just read.
    On success ``run`` holds the new heartbeat, so it is the row as committed."""
    now = timezone.now()
    claimed = HealRun.objects.filter(
        pk=run.pk, status=run.status, heartbeat_at=run.heartbeat_at, reaper_tries=run.reaper_tries
    ).update(heartbeat_at=now)
    if claimed:
        run.heartbeat_at = now
    return bool(claimed)
