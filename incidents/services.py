"""Signal intake: normalize, fingerprint, dedupe, diagnose, audit and hand new incidents to the pipeline.

Every intake path (REST API, Alertmanager webhook, exception capture, health sweeps, benchmark regressions)
ends in :func:`ingest` or :func:`ingest_many`. The partial unique constraint "one active incident per
fingerprint" is the truth behind dedupe: a concurrent duplicate that loses the race to create becomes an
occurrence bump, never an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from approvals import audit
from grace_site import rows
from incidents import channels, normalize, transitions
from incidents.choices import UNKNOWN_DIAGNOSIS, IncidentStatus
from incidents.diagnosis import Diagnosis, RuleSet, current_ruleset
from incidents.models import Channel, Incident, Service

# Status changes live in incidents.transitions; these names are part of this module's interface.
resolve = transitions.resolve
set_status = transitions.set_status
active_incident_id = transitions.active_incident_id
attach_run = transitions.attach_run
retry_transient = transitions.retry_transient
START_RUN_TASK = transitions.START_RUN_TASK

UNKNOWN_REASON = "no diagnosis rule matched: escalated to a human, GRACE will not act on it"


@dataclass
class Signal:
    """One signal as an intake path received it. Everything in it is evidence, nothing is trusted: the source
    is the channel's, the environment the inventory's, and the fingerprint is namespaced by the channel."""

    title: str
    source: str = ""  # only picks a built-in channel when ``channel`` is None (GRACE's own code paths)
    service: str = ""
    message: str = ""
    severity: str = "warning"  # incidents.choices.Severity value
    environment: str = ""  # as claimed by the signal: kept as evidence only
    labels: dict = field(default_factory=dict)
    fingerprint: str | None = None  # computed from source/service/environment/title/labels when None
    raw: dict = field(default_factory=dict)
    occurred_at: datetime | None = None
    channel: Channel | None = None  # the authenticated channel it came through
    raised_by: Any = None  # the user who raised it through the API, if any


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
    environment = (signal.environment or "").strip()[: normalize.MAX_ENVIRONMENT]
    title = title[: normalize.MAX_TITLE]
    channel = signal.channel or channels.builtin(channels.FOR_SOURCE[normalize.check_source(signal.source)])
    source = channel.source
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
        channel=channel,
        raised_by=signal.raised_by,
    )


def ingest(signal: Signal, *, actor=None) -> IngestResult:
    """Record one signal: a new incident, or an occurrence of the active incident with its fingerprint."""
    return ingest_many([signal], actor=actor)[0]


@dataclass
class BatchResult:
    results: list[IngestResult]
    resolved: list[int]
    resolved_fingerprints: dict[str, int] = field(default_factory=dict)  # fingerprint: incident resolved now


def ingest_many(signals: list[Signal], *, actor=None) -> list[IngestResult]:
    """Record a batch in one transaction: every signal is validated before anything is written.

    Signals of a batch that share a fingerprint are absorbed together (one write, ``occurrences + n``).
    Results are in the order of ``signals``; only the first signal of a new fingerprint reports ``created``
    (the ``occurrences`` of an absorbing incident is as of this write; concurrent writers may add more).
    """
    return record_batch(signals, actor=actor).results


def record_batch(
    signals: list[Signal], *, resolutions: dict[str, str] | None = None, channel: Channel | None = None, actor=None
) -> BatchResult:
    """Ingest ``signals`` and resolve the active incidents of ``resolutions`` (fingerprint: reason) in one
    transaction; resolutions apply first. Every signal of a batch comes through one channel (``channel``, or
    the signals' own), and fingerprints are that channel's: nothing here can touch another channel's incidents.

    Lock order: a batch that creates or resolves first claims every fingerprint it touches (PostgreSQL
    advisory locks, in key order), then locks their active incidents in fingerprint order; a batch that only
    absorbs duplicates takes row locks alone, in fingerprint order. Two batches creating the same fingerprint
    take turns at the claim instead of one waiting on the other's insert while holding row locks. Audit
    appends take no lock. No cycle with another batch or with the heal pipeline, which changes one incident
    at a time.
    """
    prepared = [prepare(signal) for signal in signals]
    channels_seen = {signal.channel.pk for signal in prepared} | ({channel.pk} if channel is not None else set())
    if len(channels_seen) > 1:
        raise ValueError("a batch comes through one channel")
    if channel is None:
        channel = prepared[0].channel if prepared else channels.builtin(channels.USERS)
    resolutions = {normalize.check_fingerprint(fp): reason for fp, reason in (resolutions or {}).items()}
    groups: dict[str, list[int]] = {}
    for index, signal in enumerate(prepared):
        groups.setdefault(signal.fingerprint, []).append(index)
    outcome: dict[str, tuple[Incident, bool]] = {}
    resolved: list[int] = []
    resolved_fingerprints: dict[str, int] = {}
    now = timezone.now()
    firing = sorted(groups)
    with transaction.atomic(savepoint=False):
        wanted = sorted(set(firing) | set(resolutions))
        active = _active(channel, wanted)
        writer = any(fp not in active for fp in firing) or any(fp in active for fp in resolutions)
        moved = False
        if not writer:
            try:
                with transaction.atomic():  # a savepoint: rolling it back releases its row locks
                    if _absorb(groups, firing, active, now, outcome):
                        raise transitions.Moved
            except transitions.Moved:
                # An incident was resolved between our read and our bump: start over as a writer.
                writer = moved = True
                outcome.clear()
        if writer:
            # The rule table's version is checked once per creating batch (one cheap query, before any lock),
            # so a new incident is always diagnosed with the rules this transaction sees.
            rules = current_ruleset(max_age=0)
            _claim(channel, wanted)
            if moved or connection.vendor == "postgresql":
                active = _active(channel, wanted, lock=True)
            # SQLite: every transaction begins IMMEDIATE (grace_site.env), so the first read was already made
            # under the database's write lock and nothing can have changed what it found.
            for fingerprint in sorted(resolutions):
                incident = active.get(fingerprint)
                if incident is not None and resolve(incident.pk, actor=actor, reason=resolutions[fingerprint]):
                    resolved.append(incident.pk)
                    resolved_fingerprints[fingerprint] = incident.pk
                    del active[fingerprint]
            missing = [fp for fp in firing if fp not in active]
            missing += _absorb(groups, [fp for fp in firing if fp in active], active, now, outcome)
            handed = _create_audited(prepared, groups, sorted(missing), now, outcome, actor, rules)
            if handed:
                transitions.send(START_RUN_TASK, handed)
    results = []
    seen: set[str] = set()
    for signal in prepared:
        incident, created_now = outcome[signal.fingerprint]
        results.append(IngestResult(incident, created_now and signal.fingerprint not in seen))
        seen.add(signal.fingerprint)
    return BatchResult(results, resolved, resolved_fingerprints)


def _claim(channel: Channel, fingerprints: list[str]) -> None:
    """Hold each (channel, fingerprint) claim to commit (PostgreSQL advisory locks, taken in key order). SQLite:
    every transaction already holds the database's single write lock."""
    if connection.vendor != "postgresql" or not fingerprints:
        return
    keys = sorted(
        {
            int.from_bytes(
                hashlib.blake2b(f"{channel.pk}:{fp}".encode(), digest_size=8, person=b"grace:fp").digest(),
                "big",
                signed=True,
            )
            for fp in fingerprints
        }
    )
    with connection.cursor() as cursor:
        # One statement; its select list is evaluated left to right, so the locks are taken in key order.
        cursor.execute("SELECT " + ", ".join(["pg_advisory_xact_lock(%s)"] * len(keys)), keys)


# The dedupe lookup on PostgreSQL: one index search per fingerprint, each by channel and fingerprint (a nested loop
# over the sorted fingerprints; OFFSET 0 keeps the planner from turning the subquery into a join). The ORM's
# ``fingerprint IN (...)`` left the plan to the table's statistics: on a table that had grown since its last
# ANALYZE (a new install, an alert storm) PostgreSQL searched the index by channel alone and filtered every active
# incident of the channel, in every batch, at a cost that grew with each incident created. Locked, the rows are
# locked in fingerprint order. Placeholders only: every value is a parameter.
_ACTIVE_PG = (
    "SELECT x.* FROM unnest(%s::varchar[]) AS f(fingerprint) CROSS JOIN LATERAL ("
    "SELECT * FROM incidents_incident WHERE channel_id = %s AND fingerprint = f.fingerprint "
    "AND status = ANY(%s::varchar[]) OFFSET 0{lock}) AS x"
)


def active_of(channel: Channel, fingerprints: list[str], *, lock: bool = False) -> list[Incident]:
    """The channel's active incidents of ``fingerprints`` (the dedupe lookup: an index search per fingerprint);
    ``lock``: locked for update, in fingerprint order."""
    if connection.vendor == "postgresql":
        statuses = [str(status) for status in IncidentStatus.ACTIVE]
        sql = _ACTIVE_PG.format(lock=" FOR UPDATE" if lock else "")
        return list(Incident.objects.raw(sql, [sorted(set(fingerprints)), channel.pk, statuses]))
    incidents = Incident.objects.filter(channel=channel, fingerprint__in=fingerprints, status__in=IncidentStatus.ACTIVE)
    if lock:
        incidents = incidents.select_for_update().order_by("fingerprint")
    return list(incidents)


def _active(channel: Channel, fingerprints: list[str], *, lock: bool = False) -> dict[str, Incident]:
    return {incident.fingerprint: incident for incident in active_of(channel, fingerprints, lock=lock)}


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


def _bump_pk(pk: int, count: int, now: datetime) -> bool:
    return bool(
        Incident.objects.filter(pk=pk, status__in=IncidentStatus.ACTIVE).update(
            occurrences=F("occurrences") + count, last_seen=now
        )
    )


def _bump(channel_id: int, fingerprint: str, count: int, now: datetime) -> Incident | None:
    mine = Incident.objects.filter(channel_id=channel_id, fingerprint=fingerprint, status__in=IncidentStatus.ACTIVE)
    if not mine.update(occurrences=F("occurrences") + count, last_seen=now):
        return None
    return mine.first()


@dataclass
class _Inventory:
    """What the inventory says of the services a batch names: their environments, and the channel's scope."""

    environments: dict[str, str]
    in_scope: set[str] | None  # None: the channel may raise incidents for any service

    @classmethod
    def load(cls, channel: Channel, names: set[str]) -> _Inventory:
        environments = dict(Service.objects.filter(name__in=names).values_list("name", "environment"))
        in_scope = None if channel.all_services else set(channel.services.values_list("name", flat=True))
        return cls(environments, in_scope)

    def refusal(self, signal: Signal) -> str:
        if self.in_scope is not None and signal.service not in self.in_scope:
            return (
                f"channel {signal.channel.name} may not raise incidents for service {signal.service or '(none)'!r}: "
                "kept as evidence, GRACE will not act on it"
            )
        return ""


def _new_incident(
    signal: Signal, count: int, now: datetime, rules: RuleSet, inventory: _Inventory
) -> tuple[Incident, Diagnosis]:
    diagnosis = rules.diagnose(signal)
    known = diagnosis.code != UNKNOWN_DIAGNOSIS
    refusal = inventory.refusal(signal)
    if refusal:
        status, reason = IncidentStatus.ESCALATED, refusal
    else:
        status, reason = (IncidentStatus.OPEN, "") if known else (IncidentStatus.ESCALATED, UNKNOWN_REASON)
    incident = Incident(
        fingerprint=signal.fingerprint,
        channel=signal.channel,
        raised_by=signal.raised_by if getattr(signal.raised_by, "pk", None) else None,
        source=signal.source,
        service=signal.service,
        environment=inventory.environments.get(signal.service, ""),
        claimed_environment=signal.environment,
        severity=signal.severity,
        title=signal.title,
        message=signal.message,
        labels=signal.labels,
        first_seen=min(signal.occurred_at, now) if signal.occurred_at else now,
        last_seen=now,
        occurrences=count,
        status=status,
        status_reason=reason,
        diagnosis_code=diagnosis.code,
        diagnosis_confidence=diagnosis.confidence,
        diagnosis_evidence=diagnosis.evidence,
        raw_payload=signal.raw,
    )
    return incident, diagnosis


def _create(
    prepared: list[Signal], groups: dict, pending: list[str], now: datetime, outcome: dict, rules: RuleSet
) -> list:
    """Insert the new incidents in one statement; row by row only if a conflicting row slipped in."""
    firsts = [prepared[groups[fp][0]] for fp in pending]
    inventory = _Inventory.load(firsts[0].channel, {signal.service for signal in firsts}) if firsts else None
    rows = [_new_incident(signal, len(groups[signal.fingerprint]), now, rules, inventory) for signal in firsts]
    try:
        with transaction.atomic():
            _insert([incident for incident, _ in rows])
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
                existing = _bump(incident.channel_id, incident.fingerprint, count, now)
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


def _insert(incidents: list[Incident]) -> None:
    """``bulk_create`` as plain SQL (``grace_site.rows.insert``): intake's hot write. Each value is prepared as
    its field prepares it (``auto_now`` stamps included), so rows are stored exactly as the ORM stores them."""
    fields = [field for field in Incident._meta.concrete_fields if not field.primary_key]
    rows.insert(Incident, incidents, fields, connection)


def _create_audited(
    prepared: list[Signal], groups: dict, missing: list[str], now: datetime, outcome: dict, actor, rules: RuleSet
) -> list[int]:
    """Create, audit, and return the ids of the new incidents the pipeline should heal."""
    if not missing:
        return []
    created = _create(prepared, groups, missing, now, outcome, rules)
    audit.record_many([_created_entry(incident, diagnosis, actor) for incident, diagnosis in created])
    return [incident.pk for incident, _ in created if incident.status == IncidentStatus.OPEN]


def _created_entry(incident: Incident, diagnosis: Diagnosis, actor) -> dict:
    return dict(
        action="incident.created",
        actor=actor,
        obj=incident,
        data={
            "fingerprint": incident.fingerprint,
            "channel": incident.channel.name,
            "source": incident.source,
            "service": incident.service,
            "environment": incident.environment,
            "claimed_environment": incident.claimed_environment,
            "severity": incident.severity,
            "title": incident.title,
            "status": incident.status,
            "diagnosis": diagnosis.code,
            "confidence": diagnosis.confidence,
            "rule": diagnosis.evidence.get("rule"),
        },
    )
