"""Signal intake: normalize, fingerprint, dedupe, diagnose, audit and hand new incidents to the pipeline.

Every intake path (REST API, Alertmanager webhook, exception capture, health sweeps, benchmark regressions)
ends in :func:`ingest` or :func:`ingest_many`. The partial unique constraint "one active incident per
fingerprint" is the truth behind dedupe: a concurrent duplicate that loses the race to create becomes an
occurrence bump, never an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import redis
from celery import current_app
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import KombuError

from approvals import audit
from incidents import normalize
from incidents.choices import UNKNOWN_DIAGNOSIS, IncidentStatus
from incidents.diagnosis import Diagnosis, diagnose
from incidents.models import Incident

logger = logging.getLogger(__name__)

HEAL_QUEUE = "heal.local"
START_RUN_TASK = "remediation.start_run"
CANCEL_TASK = "remediation.cancel_for_incident"
UNKNOWN_REASON = "no diagnosis rule matched: escalated to a human, GRACE will not act on it"


@dataclass
class Signal:
    source: str  # incidents.choices.Source value
    title: str
    service: str = ""
    message: str = ""
    severity: str = "warning"  # incidents.choices.Severity value
    environment: str = "production"
    labels: dict = field(default_factory=dict)
    fingerprint: str | None = None  # computed from source/service/environment/title/labels when None
    raw: dict = field(default_factory=dict)
    occurred_at: datetime | None = None


@dataclass
class IngestResult:
    incident: Incident
    created: bool


def prepare(signal: Signal) -> Signal:
    """A normalized copy of the signal with its fingerprint; ValidationError naming the field when invalid."""
    title = (signal.title or "").strip()
    if not title:
        raise ValidationError({"title": "a signal needs a title"})
    labels = normalize.clean_labels(signal.labels)
    service = (signal.service or "").strip()[: normalize.MAX_SERVICE]
    environment = (signal.environment or "production").strip()[: normalize.MAX_ENVIRONMENT] or "production"
    title = title[: normalize.MAX_TITLE]
    source = normalize.check_source(signal.source)
    if signal.fingerprint is None:
        fingerprint = normalize.compute_fingerprint(source, service, environment, title, labels)
    else:
        fingerprint = normalize.check_fingerprint(signal.fingerprint)
    return Signal(
        source=source,
        title=title,
        service=service,
        message=(signal.message or "")[: normalize.MAX_MESSAGE],
        severity=normalize.check_severity(signal.severity),
        environment=environment,
        labels=labels,
        fingerprint=fingerprint,
        raw=normalize.cap_raw(signal.raw),
        occurred_at=signal.occurred_at,
    )


def ingest(signal: Signal, *, actor=None) -> IngestResult:
    """Record one signal: a new incident, or an occurrence of the active incident with its fingerprint."""
    return ingest_many([signal], actor=actor)[0]


def ingest_many(signals: list[Signal], *, actor=None) -> list[IngestResult]:
    """Record a batch in one transaction: every signal is validated before anything is written.

    Signals of a batch that share a fingerprint are absorbed together (one write, ``occurrences + n``).
    Results are in the order of ``signals``; only the first signal of a new fingerprint reports ``created``.
    Row locks are taken in fingerprint order and creations are serialized, so concurrent batches cannot
    deadlock on each other or on the audit chain's lock.
    """
    prepared = [prepare(signal) for signal in signals]
    groups: dict[str, list[int]] = {}
    for index, signal in enumerate(prepared):
        groups.setdefault(signal.fingerprint, []).append(index)
    by_fingerprint: dict[str, tuple[Incident, bool]] = {}
    now = timezone.now()
    with transaction.atomic():
        active = {
            incident.fingerprint: incident
            for incident in Incident.objects.filter(fingerprint__in=list(groups), status__in=IncidentStatus.ACTIVE)
        }
        bumped: list[int] = []
        pending: list[str] = []
        for fingerprint in sorted(groups):
            incident = active.get(fingerprint)
            if incident is not None and _bump_pk(incident.pk, len(groups[fingerprint]), now):
                bumped.append(incident.pk)
                by_fingerprint[fingerprint] = (incident, False)
            else:
                pending.append(fingerprint)
        if bumped:
            fresh = Incident.objects.in_bulk(bumped)
            for fingerprint, (incident, _) in list(by_fingerprint.items()):
                by_fingerprint[fingerprint] = (fresh.get(incident.pk, incident), False)
        if pending:
            _serialize_creations()
            for fingerprint in pending:
                indices = groups[fingerprint]
                by_fingerprint[fingerprint] = _create_or_absorb(prepared[indices[0]], len(indices), now, actor)
    results = []
    seen: set[str] = set()
    for signal in prepared:
        incident, created = by_fingerprint[signal.fingerprint]
        results.append(IngestResult(incident, created and signal.fingerprint not in seen))
        seen.add(signal.fingerprint)
    return results


# Key of the PostgreSQL advisory lock that serializes incident creation ("GRACEINC").
_PG_CREATE_LOCK_KEY = 0x4752414345494E43 - (1 << 63)


def _serialize_creations() -> None:
    # SQLite: every GRACE transaction is BEGIN IMMEDIATE and already holds the single write lock.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_CREATE_LOCK_KEY])


def _bump_pk(pk: int, count: int, now: datetime) -> bool:
    return bool(
        Incident.objects.filter(pk=pk, status__in=IncidentStatus.ACTIVE).update(
            occurrences=F("occurrences") + count, last_seen=now
        )
    )


def _bump(fingerprint: str, count: int, now: datetime) -> Incident | None:
    bumped = Incident.objects.filter(fingerprint=fingerprint, status__in=IncidentStatus.ACTIVE).update(
        occurrences=F("occurrences") + count, last_seen=now
    )
    if not bumped:
        return None
    return Incident.objects.filter(fingerprint=fingerprint, status__in=IncidentStatus.ACTIVE).first()


def _create_or_absorb(signal: Signal, count: int, now: datetime, actor) -> tuple[Incident, bool]:
    diagnosis = diagnose(signal)
    known = diagnosis.code != UNKNOWN_DIAGNOSIS
    first_seen = min(signal.occurred_at, now) if signal.occurred_at else now
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                fingerprint=signal.fingerprint,
                source=signal.source,
                service=signal.service,
                environment=signal.environment,
                severity=signal.severity,
                title=signal.title,
                message=signal.message,
                labels=signal.labels,
                first_seen=first_seen,
                last_seen=now,
                occurrences=count,
                status=IncidentStatus.OPEN if known else IncidentStatus.ESCALATED,
                status_reason="" if known else UNKNOWN_REASON,
                diagnosis_code=diagnosis.code,
                diagnosis_confidence=diagnosis.confidence,
                diagnosis_evidence=diagnosis.evidence,
                raw_payload=signal.raw,
            )
    except IntegrityError:
        # Another transaction created the active incident for this fingerprint first.
        existing = _bump(signal.fingerprint, count, now)
        if existing is None:
            raise
        return existing, False
    _audit_created(incident, diagnosis, actor)
    if known:
        transaction.on_commit(lambda pk=incident.pk: _send(START_RUN_TASK, pk))
    return incident, True


def _audit_created(incident: Incident, diagnosis: Diagnosis, actor) -> None:
    audit.record(
        "incident.created",
        actor=actor,
        obj=incident,
        data={
            "fingerprint": incident.fingerprint,
            "source": incident.source,
            "service": incident.service,
            "severity": incident.severity,
            "title": incident.title,
            "status": incident.status,
            "diagnosis": diagnosis.code,
            "confidence": diagnosis.confidence,
            "rule": diagnosis.evidence.get("rule"),
        },
    )


def _send(task_name: str, incident_id: int) -> None:
    """Hand an incident to the pipeline by task name (after commit).

    A broker outage must not turn a committed intake into an error: the remediation reaper starts runs for
    open incidents whose hand-off was lost, so the failure is logged and the request succeeds.
    """
    try:
        current_app.send_task(task_name, args=[incident_id], queue=HEAL_QUEUE, retry=False)
    except (KombuError, redis.RedisError, OSError) as exc:
        logger.warning("could not send %s for incident %s (the reaper picks it up): %s", task_name, incident_id, exc)


def _locked_status(incident_id: int) -> str | None:
    return Incident.objects.select_for_update().filter(pk=incident_id).values_list("status", flat=True).first()


def resolve(incident_id: int, *, actor=None, reason: str) -> bool:
    """Resolve an active incident and, after commit, cancel any heal that has not started executing.

    Returns False when the incident does not exist or is not active (nothing changes then).
    """
    with transaction.atomic():
        current = _locked_status(incident_id)
        if current not in IncidentStatus.ACTIVE:
            return False
        changed = Incident.objects.filter(pk=incident_id, status=current).update(
            status=IncidentStatus.RESOLVED, status_reason=reason[:500], resolved_at=timezone.now()
        )
        if not changed:
            return False
        audit.record(
            "incident.resolved",
            actor=actor,
            obj=("incidents.incident", incident_id),
            data={"from": current, "to": IncidentStatus.RESOLVED, "reason": reason},
        )
        transaction.on_commit(lambda: _send(CANCEL_TASK, incident_id))
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
        current = _locked_status(incident_id)
        if current is None or current == status or (expected is not None and current not in expected):
            return False
        changes: dict = {"status": status, "status_reason": reason[:500]}
        if status == IncidentStatus.RESOLVED:
            changes["resolved_at"] = timezone.now()
        elif status in IncidentStatus.ACTIVE:
            changes["resolved_at"] = None
        try:
            with transaction.atomic():
                changed = Incident.objects.filter(pk=incident_id, status=current).update(**changes)
        except IntegrityError:
            return False
        if not changed:
            return False
        audit.record(
            "incident.status_changed",
            actor=actor,
            obj=("incidents.incident", incident_id),
            data={"from": current, "to": status, "reason": reason},
        )
    return True


def active_incident_id(fingerprint: str) -> int | None:
    """The id of the active incident holding ``fingerprint``, if any."""
    return (
        Incident.objects.filter(fingerprint=fingerprint, status__in=IncidentStatus.ACTIVE)
        .values_list("pk", flat=True)
        .first()
    )
