"""Incident status changes and hand-offs to the heal pipeline (used through ``incidents.services``).

A status change is a compare-and-set of one incident row; its audit entry is written in the same savepoint,
which is rolled back if the status moved meanwhile. Audit appends take no lock, so the only locks an incident
writer takes are incident rows (several of them always in fingerprint order, see ``services.record_batch``).
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random

from approvals import audit
from grace_site import handoff
from incidents import normalize
from incidents.choices import IncidentStatus
from incidents.models import Incident

logger = logging.getLogger("incidents.services")

START_RUN_TASK = "remediation.start_run"
# A batch that created several incidents hands them over in one message; a worker fans it out.
START_RUNS_TASK = "remediation.start_runs"
CANCEL_TASK = "remediation.cancel_for_incident"


def _is_transient(exc: BaseException) -> bool:
    """PostgreSQL deadlock or serialization failure: the transaction can be run again as a whole."""
    return isinstance(exc, OperationalError) and getattr(exc.__cause__, "sqlstate", None) in ("40P01", "40001")


# For the outermost caller of a whole intake transaction (views): run it again after a deadlock with a
# writer that does not lock incident rows in fingerprint order.
retry_transient = retry(
    retry=retry_if_exception(_is_transient), stop=stop_after_attempt(3), wait=wait_random(0.01, 0.2), reraise=True
)


def send(task_name: str, incident_ids: list[int]) -> None:
    """Hand incidents to the pipeline by task name, after commit: several new incidents go as one
    ``remediation.start_runs`` message (a worker fans it out). A broker outage never turns a committed intake into
    an error: the remediation reaper starts runs for open incidents whose hand-off was lost."""
    if task_name == START_RUN_TASK and len(incident_ids) > 1:
        handoff.send_on_commit(START_RUNS_TASK, list(incident_ids))
    else:
        handoff.send_many_on_commit(task_name, incident_ids)


class Moved(Exception):
    """The incident's status changed between reading it and updating it."""


def _transition(incident_id: int, status: str, *, action: str, actor, reason: str, allowed) -> str | None:
    """Audited compare-and-set of an incident's status; returns the previous status, or None if not changed.

    The audit entry and the row's update share a savepoint that is rolled back if the status moved meanwhile.
    """
    changes: dict = {"status": status, "status_reason": reason[:500]}
    if status == IncidentStatus.RESOLVED:
        changes["resolved_at"] = timezone.now()
    elif status in IncidentStatus.ACTIVE:
        changes["resolved_at"] = None
    for _ in range(len(IncidentStatus.values) + 1):
        current = Incident.objects.filter(pk=incident_id).values_list("status", flat=True).first()
        if current is None or current == status or not allowed(current):
            return None
        try:
            with transaction.atomic():
                audit.record(
                    action,
                    actor=actor,
                    obj=("incidents.incident", incident_id),
                    data={"from": current, "to": status, "reason": reason},
                )
                if not Incident.objects.filter(pk=incident_id, status=current).update(**changes):
                    raise Moved
        except Moved:
            continue
        except IntegrityError:
            return None  # re-opening would give the fingerprint a second active incident
        return current
    return None


def resolve(incident_id: int, *, actor=None, reason: str) -> bool:
    """Resolve an active incident and, after commit, cancel any heal that has not started executing.

    Returns False when the incident does not exist or is not active (nothing changes then).
    """
    with transaction.atomic():
        previous = _transition(
            incident_id,
            IncidentStatus.RESOLVED,
            action="incident.resolved",
            actor=actor,
            reason=reason,
            allowed=lambda current: current in IncidentStatus.ACTIVE,
        )
        if previous is None:
            return False
        send(CANCEL_TASK, [incident_id])
    return True


def set_status(
    incident_id: int, status: str, *, actor=None, reason: str = "", expected: tuple[str, ...] | None = None
) -> bool:
    """Move an incident to ``status`` (compare-and-set on ``expected`` when given), audited.

    Returns False when the incident does not exist, is not in an expected status, already has ``status``,
    or (re-opening a closed incident) another active incident already holds its fingerprint.
    """
    normalize.check_choice(status, IncidentStatus, "status")
    with transaction.atomic():
        previous = _transition(
            incident_id,
            status,
            action="incident.status_changed",
            actor=actor,
            reason=reason,
            allowed=lambda current: expected is None or current in expected,
        )
    return previous is not None


def active_incident_id(channel_id: int, fingerprint: str) -> int | None:
    """The id of the channel's active incident holding ``fingerprint``, if any."""
    return (
        Incident.objects.filter(channel_id=channel_id, fingerprint=fingerprint, status__in=IncidentStatus.ACTIVE)
        .values_list("pk", flat=True)
        .first()
    )


def attach_run(incident_id: int, run_id: int) -> None:
    """The pipeline created ``run_id`` for the incident: the incident names its latest run (the API's
    ``heal_run_id``) without intake reading the pipeline's tables."""
    Incident.objects.filter(pk=incident_id).exclude(latest_run_id__gt=run_id).update(latest_run_id=run_id)
