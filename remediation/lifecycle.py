"""What happens around the stages: outcomes, cancellation, operator rollback, the reaper."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from approvals import audit
from approvals import services as approvals
from incidents import services as intake
from incidents.choices import IncidentStatus
from incidents.models import Incident
from learning import services as learning
from remediation import execution, fleet, state
from remediation.choices import RunStatus
from remediation.models import ContractResult, HealRun, Playbook, RunEvent
from remediation.services import dispatch, send, transition

logger = logging.getLogger(__name__)
S = RunStatus

OUTCOME = {
    S.SUCCEEDED: "succeeded",
    S.FAILED: "failed",
    S.ROLLED_BACK: "rolled_back",
    S.ESCALATED: "escalated",
    S.REJECTED: "rejected",
    S.EXPIRED: "expired",
    S.BLOCKED: "blocked",
    S.CANCELLED: "cancelled",
    S.SIMULATED: "simulated",
}
ESCALATING = (S.ESCALATED, S.REJECTED, S.EXPIRED, S.BLOCKED, S.FAILED, S.ROLLED_BACK)


def stage_durations(run: HealRun) -> dict[str, float]:
    """Seconds spent in each status, from the timeline."""
    durations: dict[str, float] = {}
    events = list(run.events.exclude(to_status="").order_by("at", "pk").values_list("to_status", "at"))
    for (status, at), (_, nxt) in zip(events, events[1:], strict=False):
        durations[status] = durations.get(status, 0.0) + (nxt - at).total_seconds()
    return {k: round(v, 4) for k, v in durations.items()}


def record_outcome(run_id: int) -> None:
    run = HealRun.objects.select_related("incident", "playbook").filter(pk=run_id, status__in=S.TERMINAL).first()
    if run is None:
        return
    incident = run.incident
    outcome = OUTCOME[run.status]
    record = learning.record_outcome(
        run_id=run.pk,
        incident_id=incident.pk,
        diagnosis_code=run.diagnosis_code,
        playbook=run.playbook.name if run.playbook else "",
        service=incident.service,
        target=run.target,
        tier=run.tier,
        outcome=outcome,
        stage_durations=stage_durations(run),
        contract_results=list(
            ContractResult.objects.filter(run=run).values(
                "step_index", "field", "operator", "expected", "actual", "passed"
            )
        ),
        started_at=run.created_at,
        finished_at=run.finished_at or timezone.now(),
        shadow=run.shadow or run.dry_run,
    )
    if record.outcome != outcome:
        # The run ended once already (it SUCCEEDED) and an operator then rolled it back: it counts as that now,
        # and its incident is open again for humans.
        with transaction.atomic():
            learning.revise_outcome(run.pk, outcome, reason=f"run #{run.pk} {run.status} after an operator rollback")
            intake.set_status(
                incident.pk,
                IncidentStatus.ESCALATED,
                expected=(IncidentStatus.RESOLVED,),
                reason=f"run #{run.pk} was rolled back by an operator ({run.status}): {run.status_reason}",
            )
        return
    if run.status == S.SUCCEEDED:
        intake.set_status(
            incident.pk,
            IncidentStatus.RESOLVED,
            reason=f"healed by run #{run.pk}",
            expected=(IncidentStatus.HEALING, IncidentStatus.OPEN),
        )
    elif run.status in ESCALATING:
        # One transaction: a task that dies after the escalation cannot lose its notification,
        # since a redelivered one would find the incident escalated and notify nobody.
        with transaction.atomic():
            if intake.set_status(
                incident.pk,
                IncidentStatus.ESCALATED,
                reason=f"run #{run.pk}: {run.status_reason}",
                expected=(IncidentStatus.HEALING, IncidentStatus.OPEN),
            ):
                event = "run.failed" if run.status in (S.FAILED, S.ROLLED_BACK) else "run.escalated"
                approvals.notify(
                    event,
                    run_id=run.pk,
                    summary=f"{incident.title}: {run.status} — {run.status_reason}",
                    context={
                        "incident": incident.pk,
                        "service": incident.service,
                        "status": run.status,
                        "link": reverse("admin:remediation_healrun_change", args=[run.pk]),
                    },
                )
    elif run.status in (S.SIMULATED, S.CANCELLED):
        intake.set_status(
            incident.pk,
            IncidentStatus.OPEN,
            reason=f"run #{run.pk} {run.status.lower()}",
            expected=(IncidentStatus.HEALING,),
        )
    _maybe_pause(run)


def _maybe_pause(run: HealRun) -> None:
    if run.playbook is None or run.status not in (S.FAILED, S.ROLLED_BACK):
        return
    failures = learning.consecutive_failures(run.diagnosis_code, run.playbook.name)
    if failures < learning.PAUSE_AFTER_FAILURES:
        return
    reason = f"paused after {failures} consecutive failures (last: run #{run.pk}); re-enable it to try again"
    with transaction.atomic():
        if Playbook.objects.filter(pk=run.playbook_id, enabled=True).update(enabled=False, paused_reason=reason):
            audit.record("playbook.paused", obj=run.playbook, data={"failures": failures, "run": run.pk})


def cancel(run_id: int, *, actor=None, reason: str) -> bool:
    """Cancel a run that has not started changing anything. False when it is past that point."""
    status = HealRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
    if status not in S.CANCELLABLE:
        return False
    with transaction.atomic():
        if not transition(run_id, status, S.CANCELLED, actor=actor, reason=reason):
            return False
        approvals.void_pending(run_id, reason=f"run cancelled: {reason}")
    return True


def cancel_for_incident(incident_id: int, *, reason: str = "") -> int:
    reason = reason or "the incident was resolved before the heal started executing"
    cancelled = 0
    for run in HealRun.objects.filter(incident_id=incident_id).exclude(status__in=S.TERMINAL):
        if cancel(run.pk, reason=reason):
            cancelled += 1
        else:
            RunEvent.objects.create(run=run, note=f"incident resolved while {run.status}: the run continues")
    return cancelled


class RollbackRefused(Exception):
    pass


def operator_rollback(run_id: int, *, actor) -> HealRun:
    """Roll a finished run back from its verified snapshots (refused, with the reason, when one is gone or altered)."""
    run = HealRun.objects.filter(pk=run_id).first()
    if run is None or run.status != S.SUCCEEDED:
        raise RollbackRefused(f"only a SUCCEEDED run can be rolled back (this one is {getattr(run, 'status', '-')})")
    problems = execution.verify_all_snapshots(run)
    if problems:
        raise RollbackRefused("; ".join(problems))
    try:
        moved = transition(
            run.pk,
            S.SUCCEEDED,
            S.ROLLING_BACK,
            actor=actor,
            reason="rollback requested by an operator",
            family=run.family,
            host=run.host,
        )
    except IntegrityError:
        raise RollbackRefused("the incident already has another live run") from None
    if not moved:
        raise RollbackRefused("the run changed state meanwhile; try again")
    return HealRun.objects.get(pk=run.pk)


def retry_stage(run: HealRun | int, *, actor) -> bool:
    """An operator sends a moving run's current stage again (the reaper would, later). A compare-and-set claim
    on the run as the operator saw it (status, heartbeat, tries) makes it happen once, however many clicks or
    reapers race it; the stage task then resumes as the reaper's re-dispatch would. False when the run is
    finished, waiting, or moved on since it was read."""
    if not isinstance(run, HealRun):
        run = HealRun.objects.filter(pk=run).first()
    if run is None or run.status not in S.ACTIVE:
        return False
    with transaction.atomic():
        claimed = HealRun.objects.filter(
            pk=run.pk, status=run.status, heartbeat_at=run.heartbeat_at, reaper_tries=run.reaper_tries
        ).update(reaper_tries=F("reaper_tries") + 1, stage_started_at=None)
        if not claimed:
            return False
        who = actor.get_username() if hasattr(actor, "get_username") else str(actor)
        RunEvent.objects.create(run=run, note=f"stage {run.status} dispatched again by {who}")
        audit.record("run.retry", actor=actor, obj=run, data={"status": run.status, "try": run.reaper_tries + 1})
        dispatch(run.pk, run.status, family=run.family, host=run.host)
    return True


# Stages that touch the target run in tasks with the long time limits: until the hard limit has
# passed, the worker that entered the stage may still be inside an action.
TARGET_STAGES = (S.APPROVED, S.SNAPSHOTTED, S.EXECUTING, S.VERIFYING, S.ROLLING_BACK)


def stage_allowance(run: HealRun) -> float:
    """How long a run may sit in its current stage before the reaper considers its worker (or message) lost.

    A stage that touches the target and has started may take up to its hard time limit; one whose message no
    worker has started yet is sent again after the dispatch lease (a lost message costs a minute, not twenty).
    """
    grace = settings.GRACE_STAGE_GRACE_SECONDS
    if run.status in TARGET_STAGES:
        if run.stage_started_at is None:
            return settings.GRACE_DISPATCH_LEASE_SECONDS
        return grace + settings.GRACE_TASK_TIME_LIMIT
    return grace


def resume_held(*, host: str | None = None, now=None) -> int:
    """Runs waiting for their host's agent: the stage they waited in starts again when the agent is live, and a
    run past GRACE_HOST_WAIT_SECONDS goes to humans. Returns how many resumed."""
    now = now or timezone.now()
    held = HealRun.objects.filter(status=S.BLOCKED_ON_HOST)
    if host is not None:
        held = held.filter(host=host)
    resumed = 0
    deadline = now - timedelta(seconds=settings.GRACE_HOST_WAIT_SECONDS)
    for run in held.order_by("heartbeat_at")[:500]:
        if fleet.live(run.host, now=now):
            resumed += transition(
                run.pk,
                S.BLOCKED_ON_HOST,
                run.held_status,
                note=f"the agent of host {run.host} is back",
                result=state.Resumed(),
                family=run.family,
                host=run.host,
            )
        elif run.heartbeat_at < deadline:
            transition(
                run.pk,
                S.BLOCKED_ON_HOST,
                S.ESCALATED,
                result=state.Resumed(),
                reason=f"no live agent for host {run.host} within {settings.GRACE_HOST_WAIT_SECONDS} s "
                f"(it waited in {run.held_status})",
            )
    return resumed


def reap(*, now=None) -> dict[str, int]:
    """Re-dispatch runs whose worker was lost; start runs whose hand-off was lost."""
    now = now or timezone.now()
    counts = {"redispatched": 0, "given_up": 0, "started": 0, "outcomes": 0, "resumed": 0, "host_back": 0}
    counts["host_back"] = resume_held(now=now)
    oldest = now - timedelta(seconds=min(settings.GRACE_STAGE_GRACE_SECONDS, settings.GRACE_DISPATCH_LEASE_SECONDS))
    for run in HealRun.objects.filter(status__in=S.ACTIVE, heartbeat_at__lt=oldest).order_by("heartbeat_at")[:500]:
        if (now - run.heartbeat_at).total_seconds() < stage_allowance(run):
            continue
        if run.reaper_tries >= settings.GRACE_REAPER_MAX_TRIES:
            reason = f"stuck in {run.status} after {run.reaper_tries} re-dispatches"
            # A run that may have changed the target is rolled back (with tries of its own); others go to humans.
            new = S.ROLLING_BACK if run.status in (S.EXECUTING, S.VERIFYING) else S.ESCALATED
            reason += "; rolling back what it changed" if new == S.ROLLING_BACK else "; handed to humans"
            guard = {"heartbeat_at": run.heartbeat_at, "reaper_tries": run.reaper_tries}
            if transition(run.pk, run.status, new, reason=reason, guard=guard, family=run.family, host=run.host):
                counts["given_up"] += 1
            continue
        with transaction.atomic():
            # The stage is declared lost (its worker, or its message): it may be entered again.
            claimed = HealRun.objects.filter(
                pk=run.pk, status=run.status, heartbeat_at=run.heartbeat_at, reaper_tries=run.reaper_tries
            ).update(reaper_tries=F("reaper_tries") + 1, stage_started_at=None)
            if claimed:
                lost = "its message was never started" if run.stage_started_at is None else "no progress"
                RunEvent.objects.create(run=run, note=f"reaper: {lost} in {run.status}; dispatched again")
                audit.record("run.reaped", obj=run, data={"status": run.status, "try": run.reaper_tries + 1})
                dispatch(run.pk, run.status, family=run.family, host=run.host)
                counts["redispatched"] += 1
    # Finished runs whose outcome hand-off was lost (the incident would stay HEALING): send it again.
    unrecorded = HealRun.objects.filter(
        status__in=S.TERMINAL,
        finished_at__lt=oldest,
        finished_at__gte=now - timedelta(days=1),
        outcome_record__isnull=True,
    ).values_list("pk", flat=True)[:500]
    for run_id in unrecorded:
        send("remediation.record_outcome", run_id)
        counts["outcomes"] += 1
    # Runs still waiting although their approval request was decided a while ago: the resume was lost.
    waiting = HealRun.objects.filter(pk__in=approvals.decided_runs(now), status=S.AWAITING_APPROVAL)
    for run_id in waiting.values_list("pk", flat=True):
        send("remediation.resume_run", run_id)
        counts["resumed"] += 1
    lost_before = now - timedelta(seconds=settings.GRACE_HANDOFF_GRACE_SECONDS)
    orphans = Incident.objects.filter(
        status=IncidentStatus.OPEN, created_at__lt=lost_before, heal_runs__isnull=True
    ).values_list("pk", flat=True)[:500]
    for incident_id in orphans:
        send("remediation.start_run", incident_id)
        counts["started"] += 1
    return counts
