"""Celery tasks of the heal pipeline: thin wrappers that load ids and call the services.

Each is idempotent: it re-reads the run and returns when the run is past its
stage. Names are pinned (tests/test_celery_config.py): renaming strands queued messages.

A stage task run by a worker goes on with the stages that follow when that worker may run them (see
``remediation.services.chain``): a tier-1 run on this machine takes two tasks, not seven.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.utils import timezone

from grace_site import handoff
from grace_site.tasking import SHORT, TRANSIENT, grace_task
from remediation import (
    agent,  # noqa: F401 - connects the agent's worker signals
    execution,
    fleet,
    lifecycle,
    pipeline,
    services,
    snapshots,
)
from remediation.choices import RunStatus
from remediation.models import HealRun
from remediation.services import enter_stage, transition
from remediation.state import Started

logger = logging.getLogger(__name__)
S = RunStatus

# Task name -> what the task does, for the stages a task may run on after its own.
STAGES: dict[str, Callable[[int], object]] = {}


def stage_task(name: str, *, long: bool = False):
    """A pipeline stage as a task: ``@grace_task`` (no result stored), which, run by a worker, then runs the
    stages that follow and that this worker may run (``run_stage``)."""

    def register(body: Callable[[int], object]):
        STAGES[name] = body

        @grace_task(name, long=long, result=False, bind=True)
        def task(self, object_id: int):
            if self.request.called_directly or self.request.is_eager:
                return body(object_id)
            soft_limit = settings.GRACE_TASK_SOFT_TIME_LIMIT if long else SHORT["soft_time_limit"]
            queues = frozenset(self.app.amqp.queues.consume_from or ())  # its -Q and its host's queue
            return run_stage(name, object_id, queues=queues, long=long, soft_limit=soft_limit)

        return task

    return register


def run_stage(name: str, object_id: int, *, queues: frozenset[str], long: bool, soft_limit: float):
    """Run stage task ``name`` as a worker consuming ``queues`` does, in a task with the stage time limits
    (``long``) or the short ones: the stage, then each stage its transitions hand on that may run in the same
    task (``services.chain``), each as its own message would run it. A stage that fails on a transient error is
    sent as a message of its own, to be tried again as its task would be; any other error is logged, as a
    failed task's is (the reaper sends the stage again). What a failing stage committed before failing goes on
    as messages."""
    with services.chain(queues=queues, long=long, soft_limit=soft_limit) as chain:
        try:
            result = STAGES[name](object_id)
        except BaseException:
            _send_pending(chain)
            raise
        while chain.pending:
            next_name, next_id, queue = chain.pending.pop(0)
            try:
                STAGES[next_name](next_id)
            except TRANSIENT as exc:
                logger.warning(
                    "%s[%s] run on in the same task failed (%s): sent to be tried again", next_name, next_id, exc
                )
                _send(next_name, next_id, queue, countdown=1)
                break
            except Exception:
                logger.exception("%s[%s] run on in the same task failed", next_name, next_id)
                break
        _send_pending(chain)
    return result


def _send_pending(chain: services.Chain) -> None:
    while chain.pending:
        _send(*chain.pending.pop(0))


def _send(name: str, object_id: int, queue: str | None, **options) -> None:
    try:
        handoff.send(name, object_id, queue=queue, **options)
    except handoff.BROKER_ERRORS as exc:
        logger.warning("could not send %s[%s] (the reaper sends it again): %s", name, object_id, exc)


@stage_task("remediation.start_run")
def start_run(incident_id: int) -> int | None:
    run = pipeline.start_run(incident_id)
    return run.pk if run else None


@grace_task("remediation.start_runs", result=False)
def start_runs(incident_ids: list[int]) -> int:
    """A batch hand-off from intake: one start_run message per incident, so each starts and retries on its own."""
    handoff.send_many("remediation.start_run", [int(incident_id) for incident_id in incident_ids])
    return len(incident_ids)


@stage_task("remediation.plan_run")
def plan_run(run_id: int) -> None:
    pipeline.plan(run_id)


@stage_task("remediation.gate_run")
def gate_run(run_id: int) -> None:
    pipeline.gate(run_id)


@stage_task("remediation.resume_run")
def resume_run(run_id: int) -> None:
    pipeline.resume(run_id)


@stage_task("remediation.snapshot_run", long=True)
def snapshot_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.APPROVED).first()
    if run is not None and enter_stage(run):
        execution.take_snapshots(run)


@stage_task("remediation.execute_run", long=True)
def execute_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id).first()
    if run is None:
        return
    if run.status == S.SNAPSHOTTED:
        # The claim commits with the first step's attempt; the stage only reads the plan, which a transition
        # never changes.
        execution.execute(
            run,
            claim=lambda: transition(
                run_id, S.SNAPSHOTTED, S.EXECUTING, note="executing", advance=False, result=Started(timezone.now())
            ),
        )
    elif run.status == S.EXECUTING and enter_stage(run):
        execution.execute(run)


@stage_task("remediation.verify_run", long=True)
def verify_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.VERIFYING).first()
    if run is not None and enter_stage(run):
        execution.verify(run)


@stage_task("remediation.rollback_run", long=True)
def rollback_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.ROLLING_BACK).first()
    if run is not None and enter_stage(run):
        execution.rollback(run)


@stage_task("remediation.record_outcome")
def record_outcome(run_id: int) -> None:
    lifecycle.record_outcome(run_id)


@grace_task("remediation.cancel_for_incident", result=False)
def cancel_for_incident(incident_id: int) -> int:
    return lifecycle.cancel_for_incident(incident_id)


@grace_task("remediation.reap")
def reap() -> dict:
    return lifecycle.reap()


@grace_task("remediation.purge_snapshots", long=True)
def purge_snapshots(host: str | None = None) -> int:
    """Retention: this host's expired snapshots; sent by beat on the shared queue, it also sends one to the
    agent of every other host that holds expired snapshots (each host purges its own disk)."""
    if host is not None and host != settings.GRACE_HOST:
        return 0  # meant for another host's agent
    if host is None:
        others = set(snapshots.expired().exclude(host__in=["", settings.GRACE_HOST]).values_list("host", flat=True))
        for other in sorted(others):
            handoff.send("remediation.purge_snapshots", other, queue=fleet.host_queue(other))
    return snapshots.purge_expired()
