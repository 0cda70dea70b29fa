"""Celery tasks of the heal pipeline: thin wrappers that load ids and call the services.

Each is idempotent: it re-reads the run and returns when the run is past its
stage. Names are pinned (tests/test_celery_config.py): renaming strands queued messages.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from grace_site import handoff
from grace_site.tasking import grace_task
from remediation import (
    agent,  # noqa: F401 - connects the agent's worker signals
    execution,
    fleet,
    lifecycle,
    pipeline,
    snapshots,
)
from remediation.choices import RunStatus
from remediation.models import HealRun
from remediation.services import enter_stage, transition
from remediation.state import Started

S = RunStatus


@grace_task("remediation.start_run", result=False)
def start_run(incident_id: int) -> int | None:
    run = pipeline.start_run(incident_id)
    return run.pk if run else None


@grace_task("remediation.start_runs", result=False)
def start_runs(incident_ids: list[int]) -> int:
    """A batch hand-off from intake: one start_run message per incident, so each starts and retries on its own."""
    handoff.send_many("remediation.start_run", [int(incident_id) for incident_id in incident_ids])
    return len(incident_ids)


@grace_task("remediation.plan_run", result=False)
def plan_run(run_id: int) -> None:
    pipeline.plan(run_id)


@grace_task("remediation.gate_run", result=False)
def gate_run(run_id: int) -> None:
    pipeline.gate(run_id)


@grace_task("remediation.resume_run", result=False)
def resume_run(run_id: int) -> None:
    pipeline.resume(run_id)


@grace_task("remediation.snapshot_run", long=True, result=False)
def snapshot_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.APPROVED).first()
    if run is not None and enter_stage(run):
        execution.take_snapshots(run)


@grace_task("remediation.execute_run", long=True, result=False)
def execute_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id).first()
    if run is None:
        return
    if run.status == S.SNAPSHOTTED:
        if not transition(
            run_id, S.SNAPSHOTTED, S.EXECUTING, note="executing", advance=False, result=Started(timezone.now())
        ):
            return
        run.status = S.EXECUTING  # the stage only reads the plan, which a transition never changes
    elif run.status != S.EXECUTING or not enter_stage(run):
        return
    execution.execute(run)


@grace_task("remediation.verify_run", long=True, result=False)
def verify_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.VERIFYING).first()
    if run is not None and enter_stage(run):
        execution.verify(run)


@grace_task("remediation.rollback_run", long=True, result=False)
def rollback_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.ROLLING_BACK).first()
    if run is not None and enter_stage(run):
        execution.rollback(run)


@grace_task("remediation.record_outcome", result=False)
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
