"""Durable intake: a delivery is stored with one INSERT before it is acknowledged; consumers turn stored
deliveries into incidents in batches, exactly once each.

- ``accept`` / ``accept_many``: the request path. One INSERT of the raw delivery (its authenticated channel,
  received time, body), no lock, nothing else; after commit, a coalesced wake-up of a consumer.
- ``process_now``: the synchronous mode (``?wait=true``): the delivery is stored and processed in one
  transaction, and the caller gets the incidents as before.
- ``consume``: the consumer (Celery task ``incidents.consume_deliveries`` on queue ``intake``). It claims a batch
  of pending deliveries in one statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's single writer lock
  serializes claims), committing the claim with a lease, then processes the batch in one transaction whose last
  statement marks the deliveries done only where its claim still stands (if one was taken back, the transaction
  is rolled back and the rest applied again). So a delivery is applied once whatever happens: two consumers
  never claim the same delivery, a redelivered task finds nothing left to claim, and a consumer whose lease ran
  out (and whose batch was claimed again) applies nothing of that batch.
- Failures: a batch that fails is retried delivery by delivery, so one bad delivery cannot hold back the others;
  a delivery that fails ``GRACE_INTAKE_MAX_ATTEMPTS`` times (or can never succeed: its body no longer validates)
  is parked with its error, audited, and waits for an operator's ``replay``. Never lost.
- ``redrive``: the beat pass. It takes back leases of lost consumers, sends a consumer again when pending
  deliveries wait longer than ``GRACE_INTAKE_REDRIVE_SECONDS`` (a wake-up lost with Redis), and removes
  processed deliveries after ``GRACE_INTAKE_KEEP_HOURS``.
- ``backlog`` / ``check_backlog`` / ``health``: back-pressure (429 past ``GRACE_INTAKE_MAX_BACKLOG``) and
  ``/api/health/``.

Deliveries are applied in arrival order; consecutive deliveries of one channel and actor are merged into one
``services.record_batch`` unless one resolves what the other fires (then the earlier is applied first).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Min
from django.utils import timezone
from rest_framework.exceptions import ValidationError as DRFValidationError

from approvals import audit
from grace_site import handoff, rows, writer_lock
from incidents import alertmanager, bodies, services
from incidents.choices import DeliveryKind, DeliveryStatus
from incidents.models import Channel, Delivery

logger = logging.getLogger(__name__)

CONSUME_TASK = "incidents.consume_deliveries"
REDRIVE_TASK = "incidents.redrive_deliveries"
WAKE_KEY = "grace:intake:wake:{slot}"
# A consumer task hands over to a fresh one after this long (its soft time limit is 60 s).
CONSUME_BUDGET_SECONDS = 30.0
# Errors that retrying cannot fix: the delivery is parked at once.
PERMANENT = (ValidationError, DRFValidationError, json.JSONDecodeError)
PURGE_CHUNK = 5000
PURGE_BUDGET_SECONDS = 2.0
# A transaction applies consecutive deliveries of about this many alerts in all. SQLite has one writer: its
# transactions stay short, so the requests that store deliveries meanwhile do not wait long for the lock.
CHUNK_ALERTS = {"postgresql": 1000}
CHUNK_ALERTS_DEFAULT = 100


class Backlogged(Exception):
    """More deliveries wait than ``GRACE_INTAKE_MAX_BACKLOG``: answer 429 with ``retry_after``."""

    def __init__(self, pending: int, retry_after: int):
        super().__init__(
            f"Intake is {pending} deliveries behind (more than GRACE_INTAKE_MAX_BACKLOG): "
            f"retry in {retry_after} s. Nothing of this request was stored."
        )
        self.pending = pending
        self.retry_after = retry_after


# --- the request path -------------------------------------------------------------------------------------


def accept(kind: str, channel: Channel, body: str, *, alerts: int = 1, raised_by=None) -> Delivery:
    """Store one validated delivery (one INSERT; on SQLite, at its writer turn) and wake a consumer after commit."""
    now = timezone.now()
    with writer_lock.atomic():
        delivery = Delivery.objects.create(
            kind=kind,
            channel=channel,
            raised_by=raised_by if getattr(raised_by, "pk", None) else None,
            body=body,
            alerts=alerts,
            received_at=now,
            available_at=now,
        )
        wake_on_commit()
    return delivery


def wake_on_commit(slot: int = 0) -> None:
    """After commit, make sure a consumer is on its way (one message however many deliveries ask for it)."""
    handoff.send_once_on_commit(CONSUME_TASK, slot, key=WAKE_KEY.format(slot=slot), ttl=_wake_ttl())


def wake(slot: int = 0) -> bool:
    return handoff.send_once(CONSUME_TASK, slot, key=WAKE_KEY.format(slot=slot), ttl=_wake_ttl())


def _wake_ttl() -> float:
    # A consumer releases its key when it stops; the TTL only bounds how long a lost one blocks wake-ups.
    return max(5.0, settings.GRACE_INTAKE_REDRIVE_SECONDS * 2.0)


_backlog_seen: dict[str, float] = {"at": float("-inf"), "pending": 0}


def pending_count(limit: int | None = None) -> int:
    """Pending deliveries, counted up to ``limit`` (the index is read no further)."""
    queryset = Delivery.objects.filter(status=DeliveryStatus.PENDING).order_by()
    if limit is None:
        return queryset.count()
    return queryset.values("pk")[:limit].count()


def backlog_recheck_due() -> bool:
    return time.monotonic() - _backlog_seen["at"] >= settings.GRACE_INTAKE_BACKLOG_RECHECK_SECONDS


def check_backlog() -> None:
    """Raise ``Backlogged`` when more than ``GRACE_INTAKE_MAX_BACKLOG`` deliveries are pending. The count is
    read at most every ``GRACE_INTAKE_BACKLOG_RECHECK_SECONDS`` per process."""
    bound = settings.GRACE_INTAKE_MAX_BACKLOG
    now = time.monotonic()
    if now - _backlog_seen["at"] >= settings.GRACE_INTAKE_BACKLOG_RECHECK_SECONDS:
        _backlog_seen["pending"] = pending_count(bound + 1)
        _backlog_seen["at"] = now
    if _backlog_seen["pending"] > bound:
        raise Backlogged(int(_backlog_seen["pending"]), settings.GRACE_INTAKE_RETRY_AFTER)


# --- processing -------------------------------------------------------------------------------------------


@dataclass
class _Parsed:
    delivery: Delivery
    firing: list[services.Signal]
    resolutions: dict[str, str]
    count: int  # alerts (or signals) in the delivery


@dataclass
class _Group:
    channel: Channel
    actor: Any
    items: list[_Parsed] = field(default_factory=list)
    firing: set[str] = field(default_factory=set)
    resolving: set[str] = field(default_factory=set)

    def conflicts(self, item: _Parsed) -> bool:
        """Merging ``item`` would reorder a resolution and a firing of one fingerprint."""
        if not (self.resolving or item.resolutions):
            return False
        return any(signal.fingerprint in self.resolving for signal in item.firing) or any(
            fp in self.firing for fp in item.resolutions
        )

    def add(self, item: _Parsed) -> None:
        self.items.append(item)
        self.firing.update(signal.fingerprint for signal in item.firing)
        self.resolving.update(item.resolutions)


@dataclass
class Outcome:
    """What one delivery did (the API's answer in synchronous mode; its ``result`` once processed)."""

    result: dict
    ingested: list[services.IngestResult]


def actor_of(delivery: Delivery) -> Any:
    """Who the audit log names for what a delivery does: the user who posted it, else its channel."""
    return delivery.raised_by if delivery.raised_by_id else f"channel:{delivery.channel.name}"


def parse(delivery: Delivery, data: Any = None) -> _Parsed:
    """The delivery's body as signals and resolutions; validated again (the limits may have changed since):
    by ``incidents.bodies`` when it can vouch for the body, else by the API's serializer."""
    if data is None:
        data = json.loads(delivery.body)
    channel = delivery.channel
    if delivery.kind == DeliveryKind.ALERTMANAGER:
        try:
            validated = bodies.validate_alertmanager(data)
        except bodies.NotSure:
            from incidents.api.serializers import AlertmanagerWebhookSerializer

            serializer = AlertmanagerWebhookSerializer(data=data)
            serializer.is_valid(raise_exception=True)
            validated = serializer.validated_data
        firing, resolutions = alertmanager.split(validated, channel)
        return _Parsed(delivery, firing, resolutions, len(validated["alerts"]))
    try:
        body = bodies.validate_incident(data)
    except bodies.NotSure:
        from incidents.api.serializers import IncidentCreateSerializer

        serializer = IncidentCreateSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        body = dict(serializer.validated_data)
    body.pop("source", None)  # the channel stamps the source; a claimed one stays in the raw payload only
    raw = data if isinstance(data, dict) else {}
    signal = services.Signal(**body, raw=raw, channel=channel, raised_by=delivery.raised_by)
    return _Parsed(delivery, [services.prepare(signal)], {}, 1)


def _groups(items: list[_Parsed]) -> list[_Group]:
    groups: list[_Group] = []
    for item in items:
        delivery = item.delivery
        actor = actor_of(delivery)
        last = groups[-1] if groups else None
        if last is None or last.channel.pk != delivery.channel_id or last.actor != actor or last.conflicts(item):
            last = _Group(delivery.channel, actor)
            groups.append(last)
        last.add(item)
    return groups


def apply(items: list[_Parsed]) -> dict[int, Outcome]:
    """Apply parsed deliveries in order, inside the caller's transaction; the outcome of each, by position."""
    outcomes: dict[int, Outcome] = {}
    position = 0
    for group in _groups(items):
        signals = [signal for item in group.items for signal in item.firing]
        resolutions: dict[str, str] = {}
        for item in group.items:
            resolutions.update(item.resolutions)
        batch = services.record_batch(signals, resolutions=resolutions, channel=group.channel, actor=group.actor)
        start = 0
        credited: set[str] = set()
        for item in group.items:
            mine = batch.results[start : start + len(item.firing)]
            start += len(item.firing)
            resolved = [
                batch.resolved_fingerprints[fp]
                for fp in item.resolutions
                if fp in batch.resolved_fingerprints and fp not in credited
            ]
            credited.update(item.resolutions)
            result = {
                "alerts": item.count,
                "created": sum(1 for r in mine if r.created),
                "absorbed": sum(1 for r in mine if not r.created),
                "resolved": len(resolved),
                "incidents": sorted({r.incident.pk for r in mine} | set(resolved)),
            }
            outcomes[position] = Outcome(result, mine)
            position += 1
    return outcomes


def process_now(kind: str, channel: Channel, data: Any, *, raised_by=None) -> tuple[Delivery, Outcome]:
    """The synchronous mode: store the delivery and apply it in one transaction (nothing is half-done: a
    failure stores neither). The delivery is kept as processed, with its result."""
    now = timezone.now()
    delivery = Delivery(
        kind=kind,
        channel=channel,
        raised_by=raised_by if getattr(raised_by, "pk", None) else None,
        body=json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        received_at=now,
        available_at=now,
        status=DeliveryStatus.DONE,
        attempts=1,
    )
    with writer_lock.atomic():
        parsed = parse(delivery, data)
        delivery.alerts = parsed.count
        outcome = apply([parsed])[0]
        delivery.result = outcome.result
        delivery.processed_at = timezone.now()
        delivery.save(force_insert=True)
    return delivery, outcome


# --- the consumer -----------------------------------------------------------------------------------------


# The claim in one statement: the oldest pending deliveries that are due are marked as this consumer's, with a
# lease, and come back with what processing reads (the other columns load if asked for). PostgreSQL locks them
# with SKIP LOCKED, so parallel consumers take different ones; SQLite's single writer takes claims in turn. The
# ids are picked once, in a materialized CTE: as ``id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)``,
# PostgreSQL may plan a semi-join that runs the subquery again for each row and claims far more than ``n``.
_CLAIMED = [
    f.attname
    for f in Delivery._meta.concrete_fields
    if f.attname in {"id", "kind", "channel_id", "raised_by_id", "body", "alerts", "status", "attempts", "claim"}
]
# Filled in with placeholders and the model's own column names only: every value is a parameter.
_CLAIM_SQL = (
    "WITH picked AS MATERIALIZED (SELECT id FROM incidents_delivery "
    "WHERE status = 'pending' AND available_at <= %s{skip} ORDER BY id LIMIT %s{lock}) "
    "UPDATE incidents_delivery SET status = 'processing', claim = %s, lease_until = %s, attempts = attempts + 1 "
    "WHERE status = 'pending' AND id IN (SELECT id FROM picked) RETURNING {columns}"
)
_AVAILABLE_AT = Delivery._meta.get_field("available_at")


def claim(limit: int, token: str, *, skip: set[int] | frozenset = frozenset()) -> list[Delivery]:
    """Claim up to ``limit`` pending deliveries, oldest first, for ``token`` (committed, with a lease);
    ``skip``: ids this consumer saw fail already (they wait for a later pass, whatever their backoff)."""
    now = timezone.now()
    prepare = rows.preparer(_AVAILABLE_AT, connection)
    lease = now + timedelta(seconds=settings.GRACE_INTAKE_LEASE_SECONDS)
    ids = sorted(int(pk) for pk in skip)
    sql = _CLAIM_SQL.format(
        skip=f" AND id NOT IN ({', '.join(['%s'] * len(ids))})" if ids else "",  # placeholders only
        lock=" FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else "",
        columns=", ".join(_CLAIMED),
    )
    with writer_lock.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Walk the pending index in id order and stop at ``limit``. A bitmap scan (what the planner picks
            # when the table has grown since its last ANALYZE) reads every entry the index still holds for
            # deliveries claimed since the last vacuum, and never marks them dead: each claim then costs more
            # than the one before. An index scan marks them, and the next claim skips them.
            cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(sql, [prepare(now), *ids, int(limit), token, prepare(lease)])
        claimed = sorted(cursor.fetchall())
    deliveries = [Delivery.from_db(connection.alias, _CLAIMED, row) for row in claimed]
    _attach(deliveries)
    return deliveries


def _attach(deliveries: list[Delivery]) -> None:
    """Each delivery's channel and poster, read once per batch (as they are now, like the join did)."""
    if not deliveries:
        return
    found = Channel.objects.in_bulk({d.channel_id for d in deliveries})
    posters = {d.raised_by_id for d in deliveries if d.raised_by_id}
    users = get_user_model().objects.in_bulk(posters) if posters else {}
    for delivery in deliveries:
        delivery.channel = found[delivery.channel_id]  # PROTECT: a channel with deliveries is never deleted
        if delivery.raised_by_id:
            delivery.raised_by = users.get(delivery.raised_by_id)


class _Lost(Exception):
    """Some deliveries of a batch were no longer this consumer's at commit time (their lease ran out and another
    consumer took them): the transaction is rolled back and the rest applied again."""

    def __init__(self, held: set[int]):
        super().__init__(f"{len(held)} deliveries still held")
        self.held = held


def _finish(deliveries: list[Delivery], token: str) -> int:
    """Apply the deliveries this consumer still holds and mark them done, in one transaction. The bodies are
    parsed and validated before it begins (no database work), so the transaction holds the writer only for
    the writes. The last statement marks them done only where this consumer's claim still stands; when one of
    them was taken back meanwhile (a lease that ran out: rare), everything is rolled back and the deliveries
    still held are applied again, so a delivery is applied once whoever holds it."""
    mine = [parse(d) for d in deliveries]
    while mine:
        try:
            with writer_lock.atomic():
                outcomes = apply(mine)
                results = [(item.delivery.pk, outcomes[position].result) for position, item in enumerate(mine)]
                held = _mark_done(results, token)
                if len(held) != len(mine):
                    raise _Lost(held)
            return len(mine)
        except _Lost as lost:
            mine = [item for item in mine if item.delivery.pk in lost.held]
    return 0


_DONE_SET = "SET status = 'done', processed_at = %s, claim = '', lease_until = NULL, error = '', result = "
# PostgreSQL: the ids and results as two arrays, so the statement's text is the same for every batch (psycopg
# converts it once; see grace_site.rows.insert). Placeholders only: every value is a parameter.
_DONE_PG = (
    f"UPDATE incidents_delivery AS d {_DONE_SET}v.result FROM unnest(%s::bigint[], %s::jsonb[]) AS v(id, result) "
    "WHERE d.id = v.id AND d.claim = %s AND d.status = 'processing' RETURNING d.id"
)


def _mark_done(results: list[tuple[int, dict]], token: str) -> set[int]:
    """One UPDATE: each delivery still claimed by ``token`` done, with its result. Returns their ids."""
    processed_at = rows.preparer(Delivery._meta.get_field("processed_at"), connection)(timezone.now())
    encoded = [(pk, json.dumps(result, separators=(",", ":"))) for pk, result in results]
    if connection.vendor == "postgresql":
        sql = _DONE_PG
        params: list = [processed_at, [pk for pk, _ in encoded], [doc for _, doc in encoded], token]
    else:
        cases = " ".join(["WHEN %s THEN %s"] * len(encoded))
        ids = ", ".join(["%s"] * len(encoded))
        sql = (
            f"UPDATE incidents_delivery {_DONE_SET}CASE id {cases} END "
            f"WHERE id IN ({ids}) AND claim = %s AND status = 'processing' RETURNING id"
        )
        params = [processed_at, *(value for pair in encoded for value in pair), *(pk for pk, _ in encoded), token]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {pk for (pk,) in cursor.fetchall()}


def _failed(delivery: Delivery, token: str, exc: BaseException) -> None:
    """Record a failed attempt: back to pending after a backoff, or parked once attempts are spent."""
    error = f"{type(exc).__name__}: {exc}"[:4000]
    permanent = isinstance(exc, PERMANENT)
    park = permanent or delivery.attempts >= settings.GRACE_INTAKE_MAX_ATTEMPTS
    logger.warning(
        "intake: delivery %s failed (attempt %s%s): %s",
        delivery.pk,
        delivery.attempts,
        ", parked" if park else "",
        error,
    )
    now = timezone.now()
    mine = Delivery.objects.filter(pk=delivery.pk, claim=token, status=DeliveryStatus.PROCESSING)
    with writer_lock.atomic():
        if park:
            if mine.update(status=DeliveryStatus.PARKED, claim="", lease_until=None, error=error):
                _audit_parked(delivery.pk, delivery.attempts, error)
        else:
            backoff = settings.GRACE_INTAKE_RETRY_SECONDS * 2 ** (delivery.attempts - 1)
            mine.update(
                status=DeliveryStatus.PENDING,
                claim="",
                lease_until=None,
                error=error,
                available_at=now + timedelta(seconds=min(backoff, 300.0)),
            )


def _audit_parked(delivery_id: int, attempts: int, error: str) -> None:
    audit.record(
        "delivery.parked",
        actor="system:intake",
        obj=("incidents.delivery", delivery_id),
        data={"attempts": attempts, "error": error},
    )


def _chunks(deliveries: list[Delivery]) -> list[list[Delivery]]:
    """Consecutive deliveries in chunks of about CHUNK_ALERTS alerts: one transaction each."""
    limit = CHUNK_ALERTS.get(connection.vendor, CHUNK_ALERTS_DEFAULT)
    chunks: list[list[Delivery]] = [[]]
    alerts = 0
    for delivery in deliveries:
        if chunks[-1] and alerts + delivery.alerts > limit:
            chunks.append([])
            alerts = 0
        chunks[-1].append(delivery)
        alerts += delivery.alerts
    return [chunk for chunk in chunks if chunk]


def process(deliveries: list[Delivery], token: str, *, failed: set[int] | None = None) -> int:
    """Apply a claimed batch: first-time deliveries together (in chunks of about CHUNK_ALERTS alerts), retried
    ones (and the deliveries of a chunk that failed) one by one. Returns how many were applied; the ids that
    failed are added to ``failed``."""
    alone = [d for d in deliveries if d.attempts > 1]
    done = 0
    for chunk in _chunks([d for d in deliveries if d.attempts <= 1]):
        if len(chunk) == 1:
            alone.append(chunk[0])
            continue
        try:
            done += services.retry_transient(_finish)(chunk, token)
        except Exception as exc:  # noqa: BLE001 - the chunk is retried delivery by delivery, each failure recorded
            logger.warning("intake: a batch of %s deliveries failed (%s); applying them one by one", len(chunk), exc)
            alone.extend(chunk)
    alone.sort(key=lambda d: d.pk)
    for delivery in alone:
        try:
            done += services.retry_transient(_finish)([delivery], token)
        except Exception as exc:  # noqa: BLE001 - recorded on the delivery, retried later or parked
            _failed(delivery, token, exc)
            if failed is not None:
                failed.add(delivery.pk)
    return done


def consume(slot: int = 0, *, budget: float = CONSUME_BUDGET_SECONDS) -> dict:
    """Claim and apply batches until nothing is pending (or the time budget is spent: a fresh task takes over).

    When a batch comes back full, the consumer of the next slot is woken too, up to
    ``GRACE_INTAKE_CONSUMERS`` in parallel.
    """
    token = uuid.uuid4().hex
    key = WAKE_KEY.format(slot=slot)
    deadline = time.monotonic() + budget
    batch_size = settings.GRACE_INTAKE_BATCH
    applied = batches = 0
    failed: set[int] = set()
    while True:
        started = time.monotonic()
        batch = claim(batch_size, token, skip=failed)
        if not batch:
            # Release first, then look once more: a delivery stored after the last claim either is seen now or
            # finds the key free and wakes a consumer itself.
            handoff.release(key)
            batch = claim(batch_size, token, skip=failed)
            if not batch:
                break
        if len(batch) == batch_size and slot + 1 < settings.GRACE_INTAKE_CONSUMERS:
            wake(slot + 1)
        applied += process(batch, token, failed=failed)
        batches += 1
        if time.monotonic() > deadline:
            handoff.release(key)
            wake(slot)
            break
        if len(batch) < batch_size:
            # Let the next deliveries gather into one batch: a claim at most every GRACE_INTAKE_LINGER_SECONDS
            # (a batch that took longer to apply is followed by the next claim at once).
            rest = settings.GRACE_INTAKE_LINGER_SECONDS - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)
    return {"applied": applied, "batches": batches, "failed": len(failed)}


# --- beat: lost consumers, lost wake-ups, retention ---------------------------------------------------------


def recover() -> dict:
    """Deliveries whose consumer's lease ran out: back to pending, or parked when their attempts are spent."""
    now = timezone.now()
    expired = Delivery.objects.filter(status=DeliveryStatus.PROCESSING, lease_until__lt=now)
    parked = 0
    spent = list(expired.filter(attempts__gte=settings.GRACE_INTAKE_MAX_ATTEMPTS).values_list("pk", "attempts"))
    for pk, attempts in spent:
        error = f"its consumer was lost {attempts} times (a worker killed or timed out while processing it)"
        with transaction.atomic():
            if expired.filter(pk=pk).update(status=DeliveryStatus.PARKED, claim="", lease_until=None, error=error):
                _audit_parked(pk, attempts, error)
                parked += 1
    released = expired.filter(attempts__lt=settings.GRACE_INTAKE_MAX_ATTEMPTS).update(
        status=DeliveryStatus.PENDING, claim="", lease_until=None, available_at=now
    )
    return {"released": released, "parked": parked}


def redrive() -> dict:
    """The beat pass: recover lost leases, send a consumer when deliveries wait too long, apply retention."""
    summary = recover()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.GRACE_INTAKE_REDRIVE_SECONDS)
    waiting = Delivery.objects.filter(status=DeliveryStatus.PENDING, available_at__lte=stale).exists()
    if summary["released"] or waiting:
        # Sent whatever the wake-up key says: the message it stands for may be the one that was lost.
        handoff.release(WAKE_KEY.format(slot=0))
        summary["woken"] = wake(0)
    summary["purged"] = purge(now - timedelta(hours=settings.GRACE_INTAKE_KEEP_HOURS))
    return summary


def purge(before, *, budget: float = PURGE_BUDGET_SECONDS) -> int:
    """Remove processed deliveries received before ``before``, a chunk at a time, for at most ``budget`` seconds
    (what is left goes in the next pass)."""
    deadline = time.monotonic() + budget
    removed = 0
    while True:
        ids = list(
            Delivery.objects.filter(status=DeliveryStatus.DONE, received_at__lt=before)
            .order_by("received_at")
            .values_list("pk", flat=True)[:PURGE_CHUNK]
        )
        if ids:
            removed += Delivery.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < PURGE_CHUNK or time.monotonic() > deadline:
            return removed


# --- operators --------------------------------------------------------------------------------------------


def replay(delivery_id: int, *, actor=None) -> bool:
    """Send a parked delivery back to the consumers (audited). False when it is not parked."""
    now = timezone.now()
    with transaction.atomic():
        row = Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PARKED).values("error", "attempts").first()
        if row is None:
            return False
        if not Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PARKED).update(
            status=DeliveryStatus.PENDING, attempts=0, available_at=now, claim="", lease_until=None
        ):
            return False
        audit.record(
            "delivery.replayed",
            actor=actor,
            obj=("incidents.delivery", delivery_id),
            data={"status": DeliveryStatus.PENDING, "attempts": row["attempts"], "error": row["error"]},
        )
        wake_on_commit()
    return True


# --- health -----------------------------------------------------------------------------------------------


def backlog() -> dict:
    """Pending and processing deliveries, the age of the oldest, and parked ones."""
    oldest = (
        Delivery.objects.filter(status=DeliveryStatus.PENDING).order_by("pk").values_list("received_at", flat=True)
    ).first()
    processing = Delivery.objects.filter(status=DeliveryStatus.PROCESSING).order_by()
    held = processing.aggregate(count=Count("pk"), oldest=Min("received_at"))
    if held["oldest"] is not None and (oldest is None or held["oldest"] < oldest):
        oldest = held["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest is not None else 0.0
    return {
        "pending": pending_count(settings.GRACE_INTAKE_MAX_BACKLOG + 1),
        "processing": held["count"],
        "oldest_seconds": round(max(age, 0.0), 1),
        "parked": Delivery.objects.filter(status=DeliveryStatus.PARKED).count(),
    }


def health() -> dict:
    """For ``/api/health/``: the backlog and its age, as warnings (never a 503: accepted alerts are stored)."""
    state = backlog()
    warnings = []
    if state["oldest_seconds"] > settings.GRACE_INTAKE_MAX_AGE:
        warnings.append(
            f"the oldest unprocessed delivery waits for {state['oldest_seconds']:.0f} s "
            "(is a worker consuming the intake queue?)"
        )
    if state["pending"] > settings.GRACE_INTAKE_MAX_BACKLOG:
        warnings.append(f"more than {settings.GRACE_INTAKE_MAX_BACKLOG} deliveries pending: intake answers 429")
    if state["parked"]:
        warnings.append(f"{state['parked']} deliveries parked after failing (Incidents > Deliveries: replay)")
    result: dict = {"ok": True, **state}
    if warnings:
        result["warning"] = "; ".join(warnings)
    return result
