"""Run state changes: the only way a HealRun's status moves.

Each transition is a compare-and-set UPDATE on the current status, a timeline
row and an audit event in one transaction; the next stage is dispatched on
commit, so a worker never sees a state that was not committed.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals import audit
from grace_site import handoff
from remediation import fleet, state
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


def send(task: str, object_id: int, *, queue: str | None = None) -> None:
    """Publish a pipeline task now (the reaper's re-sends); stages go through ``dispatch``, after commit."""
    handoff.send(task, object_id, queue=queue)


def dispatch(run_id: int, status: str, *, family: str = "", host: str = "") -> None:
    """Send the task that moves a run on from ``status`` (after the current transaction commits).

    A stage that touches a local resource goes to the queue of the agent on the resource's host; when no agent
    is live there, the run waits in BLOCKED_ON_HOST (it resumes when the agent is back) instead of queueing.
    """
    task = STAGE_TASKS.get(status)
    if task is None:
        return
    queue = None
    if status in ACTION_STAGES and host:
        if not fleet.live(host):
            transition(
                run_id, status, RunStatus.BLOCKED_ON_HOST, reason=f"no live agent for host {host}",
                result=state.Held(status), advance=False,
            )  # fmt: skip
            return
        queue = fleet.host_queue(host)
    elif status in ACTION_STAGES and family and family != Family.LOCAL:
        queue = handoff.HEAL_CLOUD
    handoff.send_on_commit(task, run_id, queue=queue)


def transition(
    run_id: int,
    expected: str,
    new: str,
    *,
    note: str = "",
    data: dict | None = None,
    actor: Any = None,
    reason: str | None = None,
    result: state.StageResult | None = None,
    advance: bool = True,
    family: str | None = None,
    guard: dict | None = None,
) -> bool:
    """Move run ``run_id`` from ``expected`` to ``new`` (a move ``remediation.state`` allows), writing what the
    stage produced (``result``); False when another worker got there first."""
    state.check(expected, new)
    with transaction.atomic(savepoint=False):
        now = timezone.now()
        updates: dict[str, Any] = {"status": new, "heartbeat_at": now, "reaper_tries": 0, "stage_started_at": None}
        if result is not None:
            updates.update(result.fields())
        if reason is not None:
            updates["status_reason"] = reason[:2000]
        # finished_at is set exactly while the run is in a final state (a database check says so too).
        updates["finished_at"] = now if new in RunStatus.TERMINAL else None
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
            handoff.send_on_commit("remediation.record_outcome", run_id)
        elif advance:
            host = ""
            if new in ACTION_STAGES:
                family_, host = HealRun.objects.filter(pk=run_id).values_list("family", "host").first()
                family = family_ if family is None else family
            dispatch(run_id, new, family=family or "", host=host)
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


def enter_stage(run: HealRun) -> bool:
    """Start the run's current stage as the only worker: compare-and-set on "not started yet". However many
    messages for the stage are in flight (a re-send after the dispatch lease, a redelivery), one worker enters;
    the reaper clears the mark when it declares a started stage's worker lost. On success ``run`` holds the row
    as committed."""
    now = timezone.now()
    entered = HealRun.objects.filter(pk=run.pk, status=run.status, stage_started_at__isnull=True).update(
        heartbeat_at=now, stage_started_at=now
    )
    if entered:
        run.heartbeat_at = run.stage_started_at = now
    return bool(entered)
