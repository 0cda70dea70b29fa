"""Benchmark-only task, loaded into the benchmark's worker with ``--include bench.floor_tasks``.

``bench.audited_step`` does the least any pipeline stage does: read the run, then one audited
transition (compare-and-set UPDATE, timeline row and hash-chained audit event in one
transaction). A chain of them, beside the no-op chain, shows what the audited state machine
itself costs per stage, apart from the work the stages do.
"""

from celery import shared_task

from remediation.choices import RunStatus
from remediation.models import HealRun
from remediation.services import transition

# Two waiting states the state machine lets a run move between both ways (a re-plan sends a run waiting for
# approval back to PLANNED): nothing is dispatched on commit.
FLIP = {RunStatus.PLANNED: RunStatus.AWAITING_APPROVAL, RunStatus.AWAITING_APPROVAL: RunStatus.PLANNED}


@shared_task(name="bench.audited_step", acks_late=True)
def audited_step(run_id: int) -> str:
    status = HealRun.objects.filter(pk=run_id).values_list("status", flat=True).get()
    if not transition(run_id, status, FLIP[status], note="benchmark floor step", advance=False):
        raise RuntimeError(f"run {run_id} moved under the benchmark")
    return FLIP[status]
