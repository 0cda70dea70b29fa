"""Celery tasks of the heal pipeline: thin wrappers that load ids and call the services.

Each is idempotent: it re-reads the run and returns when the run is past its
stage. Names are pinned (tests/test_celery_config.py): renaming strands queued messages.
"""

from __future__ import annotations

from django.utils import timezone

from grace_site import handoff
from grace_site.tasking import grace_task
from remediation import execution, lifecycle, pipeline, snapshots
from remediation.actions import load_all
from remediation.choices import RunStatus
from remediation.models import HealRun
from remediation.services import claim, transition

S = RunStatus
# Import every action family (boto3, docker, kubernetes clients) when the worker loads its tasks,
# before it forks, rather than inside the first run that needs them.
load_all()


def _reentrant(run: HealRun) -> bool:
    """A stage already entered is resumed only when the reaper declared its worker lost."""
    if run.reaper_tries == 0:
        age = (timezone.now() - run.heartbeat_at).total_seconds()
        if age < lifecycle.stage_allowance(run):
            return False
    return claim(run)


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
    if run is not None and claim(run):
        execution.take_snapshots(run)


@grace_task("remediation.execute_run", long=True, result=False)
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


@grace_task("remediation.verify_run", long=True, result=False)
def verify_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.VERIFYING).first()
    if run is not None and claim(run):
        execution.verify(run)


@grace_task("remediation.rollback_run", long=True, result=False)
def rollback_run(run_id: int) -> None:
    run = HealRun.objects.filter(pk=run_id, status=S.ROLLING_BACK).first()
    if run is not None and claim(run):
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
def purge_snapshots() -> int:
    return snapshots.purge_expired()
