"""Celery tasks of the heal pipeline: thin wrappers that load ids and call the services.

Each is idempotent: it re-reads the run and returns when the run is past its
stage. Names are pinned (tests/test_celery_config.py): renaming strands queued messages.
"""

from __future__ import annotations

import redis
from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from grace_site import handoff
from remediation import execution, lifecycle, pipeline, snapshots
from remediation.actions import load_all
from remediation.choices import RunStatus
from remediation.models import HealRun
from remediation.services import claim, transition

S = RunStatus
# Import every action family (boto3, docker, kubernetes clients) when the worker loads its tasks,
# before it forks, rather than inside the first run that needs them.
load_all()
# Database hiccups, and Redis outages while governance reads its limits (it fails closed): retried.
TRANSIENT = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)
_common = {
    "acks_late": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}
_short = {**_common, "soft_time_limit": 60, "time_limit": 90}
_long = {
    **_common,
    "soft_time_limit": settings.GRACE_TASK_SOFT_TIME_LIMIT,
    "time_limit": settings.GRACE_TASK_TIME_LIMIT,
}
# Pipeline stages report through the run's timeline, never through a task result: nobody waits on
# them, so no result is written to the backend (one Redis write and publish less per stage).
_stage = {**_short, "ignore_result": True}
_long_stage = {**_long, "ignore_result": True}


def _reentrant(run: HealRun) -> bool:
    """A stage already entered is resumed only when the reaper declared its worker lost."""
    if run.reaper_tries == 0:
        age = (timezone.now() - run.heartbeat_at).total_seconds()
        if age < lifecycle.stage_allowance(run):
            return False
    return claim(run)


@shared_task(name="remediation.start_run", **_stage)
def start_run(incident_id: int) -> int | None:
    run = pipeline.start_run(incident_id)
    return run.pk if run else None


@shared_task(name="remediation.start_runs", **_stage)
def start_runs(incident_ids: list[int]) -> int:
    """A batch hand-off from intake: one start_run message per incident, so each starts and retries on its own."""
    handoff.send_many("remediation.start_run", [int(incident_id) for incident_id in incident_ids])
    return len(incident_ids)


@shared_task(name="remediation.plan_run", **_stage)
def plan_run(run_id: int) -> None:
    pipeline.plan(run_id)


@shared_task(name="remediation.gate_run", **_stage)
def gate_run(run_id: int) -> None:
    pipeline.gate(run_id)


@shared_task(name="remediation.resume_run", **_stage)
def resume_run(run_id: int) -> None:
    pipeline.resume(run_id)


@shared_task(name="remediation.snapshot_run", **_long_stage)
def snapshot_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.APPROVED).first()
    if run is not None and claim(run):
        execution.take_snapshots(run)


@shared_task(name="remediation.execute_run", **_long_stage)
def execute_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id).first()
    if run is None:
        return
    if run.status == S.SNAPSHOTTED:
        if not transition(run_id, S.SNAPSHOTTED, S.EXECUTING, note="executing", advance=False):
            return
        run.status = S.EXECUTING  # the stage only reads the plan, which a transition never changes
    elif run.status != S.EXECUTING or not _reentrant(run):
        return
    execution.execute(run)


@shared_task(name="remediation.verify_run", **_long_stage)
def verify_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.VERIFYING).first()
    if run is not None and claim(run):
        execution.verify(run)


@shared_task(name="remediation.rollback_run", **_long_stage)
def rollback_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.ROLLING_BACK).first()
    if run is not None and claim(run):
        execution.rollback(run)


@shared_task(name="remediation.record_outcome", **_stage)
def record_outcome(run_id: int) -> None:
    lifecycle.record_outcome(run_id)


@shared_task(name="remediation.cancel_for_incident", **_stage)
def cancel_for_incident(incident_id: int) -> int:
    return lifecycle.cancel_for_incident(incident_id)


@shared_task(name="remediation.reap", **_short)
def reap() -> dict:
    return lifecycle.reap()


@shared_task(name="remediation.purge_snapshots", **_long)
def purge_snapshots() -> int:
    return snapshots.purge_expired()
