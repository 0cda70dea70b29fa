"""The tamper-evident audit log: the one module every GRACE app calls.

``record()`` appends one event inside the caller's transaction, so an event
exists exactly when the change it describes was committed. Appends are
serialized (an advisory lock on PostgreSQL; IMMEDIATE transactions on SQLite)
so concurrent writers can never fork the chain; the unique constraints on
``prev_hash`` and ``hash`` are the backstop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.utils import timezone

from approvals import audit_actions
from approvals.models import GENESIS_HASH, AuditEvent
from grace_site.changes import diff  # noqa: F401 - part of this module's interface

# Key of the PostgreSQL advisory lock that serializes appends ("GRACEAUD").
_PG_LOCK_KEY = 0x4752414345415544 - (1 << 63)


def _normalize(value: Any) -> Any:
    """Plain JSON types only, and integral floats as ints (jsonb renders 1e20 as an integer)."""
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical(
    *, seq: int, at, actor: str, action: str, object_type: str, object_id: str, data: Any, prev_hash: str
) -> bytes:
    document = {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "data": data,
        "prev_hash": prev_hash,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(
        canonical(
            seq=event.seq,
            at=event.at,
            actor=event.actor,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            data=event.data,
            prev_hash=event.prev_hash,
        )
    ).hexdigest()


def _actor_name(actor: Any) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor[:150]
    username = getattr(actor, "get_username", None)
    if callable(username) and getattr(actor, "is_authenticated", False):
        return username()[:150]
    return "anonymous"


def _object_ref(obj: Any) -> tuple[str, str]:
    if obj is None:
        return "", ""
    if isinstance(obj, models.Model):
        return obj._meta.label_lower, str(obj.pk)
    object_type, object_id = obj
    return str(object_type), str(object_id)


def lock_chain() -> None:
    """Serialize appends to the chain until the transaction ends (callers that must take it first)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK_KEY])
    # SQLite: GRACE opens every transaction with BEGIN IMMEDIATE, which already
    # holds the database's single write lock for the whole transaction.


def record(action: str, *, actor: Any = None, obj: Any = None, data: dict | None = None) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction."""
    return record_many([{"action": action, "actor": actor, "obj": obj, "data": data}])[0]


def record_many(entries: list[dict]) -> list[AuditEvent]:
    """Append events in order, inside the caller's transaction: the same links ``record()`` would make
    one by one, with one lock, one read of the chain's head and one INSERT.

    Each entry is ``{"action", "actor", "obj", "data"}`` (all but ``action`` optional).
    """
    if not entries:
        return []
    for entry in entries:
        audit_actions.check(entry["action"])
    with transaction.atomic(savepoint=False):  # no savepoint: any failure aborts the caller
        lock_chain()
        with connection.cursor() as cursor:
            cursor.execute(_HEAD_SQL)
            last = cursor.fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        at = timezone.now()
        events = []
        for entry in entries:
            object_type, object_id = _object_ref(entry.get("obj"))
            event = AuditEvent(
                seq=seq,
                at=at,
                actor=_actor_name(entry.get("actor")),
                action=entry["action"],
                object_type=object_type,
                object_id=object_id,
                data=_normalize(json.loads(json.dumps(entry.get("data") or {}, cls=DjangoJSONEncoder))),
                prev_hash=prev_hash,
            )
            event.hash = compute_hash(event)
            events.append(event)
            seq, prev_hash = seq + 1, event.hash
        _insert(events)
    return events


# Every state change appends here, so the append is plain SQL: the ORM's query building
# cost more than the two round trips themselves. Values go through the fields' own
# preparation, so they are stored exactly as the ORM would store them.
_COLUMNS = ("seq", "at", "actor", "action", "object_type", "object_id", "data", "prev_hash", "hash")
_HEAD_SQL = "SELECT seq, hash FROM approvals_auditevent ORDER BY seq DESC LIMIT 1"
_INSERT_SQL = "INSERT INTO approvals_auditevent (seq, at, actor, action, object_type, object_id, data, prev_hash, hash)"
_ROWS_PER_INSERT = 100


def _insert(events: list[AuditEvent]) -> None:
    fields = [AuditEvent._meta.get_field(c) for c in _COLUMNS]
    placeholder = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(events), _ROWS_PER_INSERT):
            chunk = events[start : start + _ROWS_PER_INSERT]
            params = [f.get_db_prep_save(getattr(event, f.attname), connection) for event in chunk for f in fields]
            values = ", ".join([placeholder] * len(chunk))  # placeholders only: the values are parameters
            cursor.execute(f"{_INSERT_SQL} VALUES {values}", params)


@dataclass(frozen=True)
class ChainReport:
    count: int
    broken_seq: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def _events(chunk_size: int = 2000) -> Iterator[AuditEvent]:
    return AuditEvent.objects.order_by("seq").iterator(chunk_size=chunk_size)


def verify_chain() -> ChainReport:
    """Recompute every link; report the first one that does not hold."""
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
    for event in _events():
        if event.seq != expected_seq:
            return ChainReport(count, expected_seq, f"seq {expected_seq} is missing (next present is {event.seq})")
        if event.prev_hash != prev_hash:
            return ChainReport(count, event.seq, "prev_hash does not match the previous event's hash")
        if compute_hash(event) != event.hash:
            return ChainReport(count, event.seq, "stored hash does not match the event's contents")
        prev_hash, expected_seq, count = event.hash, expected_seq + 1, count + 1
    return ChainReport(count)
