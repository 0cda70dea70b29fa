"""Run state changes: the only way a HealRun's status moves.

Each transition is a compare-and-set UPDATE on the current status, a timeline
row and an audit event in one transaction; the next stage is dispatched on
commit, so a worker never sees a state that was not committed.

A stage task running in a worker may run the next stage itself, after the commit, instead of sending it
through the broker (``chain``): only when that worker consumes the queue the stage would be sent to (for a
host's stage: it is that host's agent), only a stage whose time limits the running task has, and only while
the task is young enough that the next stage keeps nearly all of its time limit. The next stage is entered
exactly as its own message would enter it (its claim, its transition, its timeline row); if the worker dies in
between, the run is where a lost message would leave it, and the reaper sends the stage again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
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


# Tasks with the stage time limits (GRACE_TASK_SOFT_TIME_LIMIT / GRACE_TASK_TIME_LIMIT); the others have 60/90 s.
LONG_TASKS = frozenset(
    {"remediation.snapshot_run", "remediation.execute_run", "remediation.verify_run", "remediation.rollback_run"}
)
# A stage runs on in the same task only while the task has used less than this share of its soft time limit
# (and never more than CHAIN_MAX_SECONDS): the next stage keeps nearly all of its own limit. The planner keeps
# contract waits 30 s inside the verify stage's soft limit, more than a chained stage can lose.
CHAIN_SHARE = 0.1
CHAIN_MAX_SECONDS = 10.0


@dataclass
class Chain:
    """The stages the running task will run next, in order, each once its sender's transaction committed."""

    queues: frozenset[str]  # the queues this worker consumes
    long: bool  # the running task has the stage time limits
    deadline: float  # time.monotonic() after which stages are sent instead
    pending: list[tuple[str, int, str | None]] = field(default_factory=list)


_chain: ContextVar[Chain | None] = ContextVar("grace_stage_chain", default=None)


@contextmanager
def chain(*, queues: frozenset[str], long: bool, soft_limit: float) -> Iterator[Chain]:
    """Inside a stage task: the next stages this worker may run are queued here (run them with ``run_next``)."""
    budget = min(CHAIN_MAX_SECONDS, CHAIN_SHARE * soft_limit)
    current = Chain(queues=queues, long=long, deadline=time.monotonic() + budget)
    token = _chain.set(current)
    try:
        yield current
    finally:
        _chain.reset(token)


def _follow_on(task: str, object_id: int, queue: str | None) -> bool:
    """Queue ``task`` to run next in this task once the current transaction commits, when this task may run it."""
    current = _chain.get()
    if current is None or (queue or handoff.TASKS[task]) not in current.queues:
        return False
    if (task in LONG_TASKS and not current.long) or time.monotonic() > current.deadline:
        return False
    transaction.on_commit(partial(current.pending.append, (task, object_id, queue)))
    return True


def _send_on_commit(task: str, object_id: int, *, queue: str | None = None) -> None:
    """The next stage: run on in this task when it may (see the module's docstring), else sent after commit."""
    if not _follow_on(task, object_id, queue):
        handoff.send_on_commit(task, object_id, queue=queue)


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
        queue = fleet.host_queue(host)
        if _follow_on(task, run_id, queue):
            return  # this worker is the host's agent: the stage runs on here
        if not fleet.live(host):
            transition(
                run_id,
                status,
                RunStatus.BLOCKED_ON_HOST,
                reason=f"no live agent for host {host}",
                result=state.Held(status),
                advance=False,
            )
            return
    elif status in ACTION_STAGES and family and family != Family.LOCAL:
        queue = handoff.HEAL_CLOUD
    _send_on_commit(task, run_id, queue=queue)


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
    host: str | None = None,
    guard: dict | None = None,
) -> bool:
    """Move run ``run_id`` from ``expected`` to ``new`` (a move ``remediation.state`` allows), writing what the
    stage produced (``result``); False when another worker got there first. ``family`` and ``host`` route the
    next stage (read from the run when not given)."""
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
            _send_on_commit("remediation.record_outcome", run_id)
        elif advance:
            if new in ACTION_STAGES and (family is None or host is None):
                family_, host_ = HealRun.objects.filter(pk=run_id).values_list("family", "host").first()
                family = family_ if family is None else family
                host = host_ if host is None else host
            dispatch(run_id, new, family=family or "", host=host or "")
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
