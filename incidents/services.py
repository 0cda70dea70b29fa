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
from incidents.diagnosis import Diagnosis, RuleSet, current_ruleset
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
    Results are in the order of ``signals``; only the first signal of a new fingerprint reports ``created``
    (the ``occurrences`` of an absorbing incident is as of this write; concurrent writers may add more).
    Row locks are taken in fingerprint order and creations are serialized, so concurrent batches cannot
    deadlock on each other or on the audit chain's lock.
    """
    prepared = [prepare(signal) for signal in signals]
    groups: dict[str, list[int]] = {}
    for index, signal in enumerate(prepared):
        groups.setdefault(signal.fingerprint, []).append(index)
    outcome: dict[str, tuple[Incident, bool]] = {}
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        fingerprints = sorted(groups)
        active = _active(fingerprints)
        if len(active) < len(fingerprints):
            # Creating: take the creation lock before any row lock, then look again (every earlier creation
            # is committed and visible now).
            _serialize_creations()
            active = _active(fingerprints)
        pending = _absorb(groups, fingerprints, active, now, outcome)
        if pending:
            created = _create(prepared, groups, pending, now, outcome)
            for incident, diagnosis in created:
                _audit_created(incident, diagnosis, actor)
            handed = [incident.pk for incident, _ in created if incident.status == IncidentStatus.OPEN]
            if handed:
                transaction.on_commit(lambda: _send(START_RUN_TASK, handed))
    results = []
    seen: set[str] = set()
    for signal in prepared:
        incident, created_now = outcome[signal.fingerprint]
        results.append(IngestResult(incident, created_now and signal.fingerprint not in seen))
        seen.add(signal.fingerprint)
    return results


def _active(fingerprints: list[str]) -> dict[str, Incident]:
    return {
        incident.fingerprint: incident
        for incident in Incident.objects.filter(fingerprint__in=fingerprints, status__in=IncidentStatus.ACTIVE)
    }


def _absorb(groups: dict, fingerprints: list[str], active: dict, now: datetime, outcome: dict) -> list[str]:
    """Bump the active incidents of ``fingerprints`` (in order); return the fingerprints that have none."""
    pending = []
    for fingerprint in fingerprints:
        incident = active.get(fingerprint)
        count = len(groups[fingerprint])
        if incident is not None and _bump_pk(incident.pk, count, now):
            incident.occurrences += count
            incident.last_seen = now
            outcome[fingerprint] = (incident, False)
        else:
            pending.append(fingerprint)
    return pending


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


def _new_incident(signal: Signal, count: int, now: datetime, rules: RuleSet) -> tuple[Incident, Diagnosis]:
    diagnosis = rules.diagnose(signal)
    known = diagnosis.code != UNKNOWN_DIAGNOSIS
    incident = Incident(
        fingerprint=signal.fingerprint,
        source=signal.source,
        service=signal.service,
        environment=signal.environment,
        severity=signal.severity,
        title=signal.title,
        message=signal.message,
        labels=signal.labels,
        first_seen=min(signal.occurred_at, now) if signal.occurred_at else now,
        last_seen=now,
        occurrences=count,
        status=IncidentStatus.OPEN if known else IncidentStatus.ESCALATED,
        status_reason="" if known else UNKNOWN_REASON,
        diagnosis_code=diagnosis.code,
        diagnosis_confidence=diagnosis.confidence,
        diagnosis_evidence=diagnosis.evidence,
        raw_payload=signal.raw,
    )
    return incident, diagnosis


def _create(prepared: list[Signal], groups: dict, pending: list[str], now: datetime, outcome: dict) -> list:
    """Insert the new incidents in one statement; row by row only if a conflicting row slipped in."""
    # Creation checks the rule table's version once per batch (one cheap query), so a new incident is always
    # diagnosed with the rules this transaction sees, however recently they changed.
    rules = current_ruleset(max_age=0)
    rows = [_new_incident(prepared[groups[fp][0]], len(groups[fp]), now, rules) for fp in pending]
    try:
        with transaction.atomic():
            Incident.objects.bulk_create([incident for incident, _ in rows])
    except IntegrityError:
        # A re-opened incident took one of the fingerprints meanwhile: absorb it, create the others one by one.
        created = []
        for incident, diagnosis in rows:
            count = len(groups[incident.fingerprint])
            incident.pk, incident._state.adding = None, True
            try:
                with transaction.atomic():
                    incident.save(force_insert=True)
            except IntegrityError:
                existing = _bump(incident.fingerprint, count, now)
                if existing is None:
                    raise
                outcome[incident.fingerprint] = (existing, False)
                continue
            outcome[incident.fingerprint] = (incident, True)
            created.append((incident, diagnosis))
        return created
    for incident, _ in rows:
        outcome[incident.fingerprint] = (incident, True)
    return rows


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


def _send(task_name: str, incident_ids: list[int]) -> None:
    """Hand incidents to the pipeline by task name (after commit), one message each, on one connection.

    A broker outage must not turn a committed intake into an error: the remediation reaper starts runs for
    open incidents whose hand-off was lost, so the failure is logged and the request succeeds. Nobody waits
    for these tasks' results, so none are subscribed to.
    """
    try:
        with current_app.producer_or_acquire() as producer:
            for incident_id in incident_ids:
                current_app.send_task(
                    task_name, args=[incident_id], queue=HEAL_QUEUE, retry=False, ignore_result=True, producer=producer
                )
    except (KombuError, redis.RedisError, OSError) as exc:
        logger.warning(
            "could not send %s for incidents %s (the reaper picks them up): %s", task_name, incident_ids, exc
        )


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
        transaction.on_commit(lambda: _send(CANCEL_TASK, [incident_id]))
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
