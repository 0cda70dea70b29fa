"""The tamper-evident audit log: the one module every GRACE app calls.

``record()`` inserts one immutable entry inside the caller's transaction, so an
entry exists exactly when the change it describes was committed. It takes no lock
and reads nothing: concurrent writers never wait for each other here. The sealer
(``seal()``, run by beat every second) then chains committed entries in batches:
each gets a ``seq`` and ``hash = sha256(canonical(entry, seq, prev_hash))``. The
signed checkpoints of ``approvals.checkpoints`` anchor the chain outside the
database; ``verify_audit`` recomputes it and checks it against them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.utils import timezone

from approvals import audit_actions
from approvals.models import AuditEvent
from grace_site import rows
from grace_site.changes import diff  # noqa: F401 - part of this module's interface


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
    """The bytes a link's hash covers: the entry's contents, its place (seq) and the previous link's hash.

    ``at`` is the entry's time, or already in the form hashed: ISO 8601 in UTC with microseconds
    (``2026-11-25T10:56:00.123456+00:00``).
    """
    document = {
        "seq": seq,
        "at": at if isinstance(at, str) else at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "data": data,
        "prev_hash": prev_hash,
    }
    return _CANONICAL.encode(document).encode()


# What json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) does, built once: the sealer and
# verify_audit encode a document per link.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def link_hash(*, seq: int, prev_hash: str, event: AuditEvent) -> str:
    """The hash of ``event`` sealed at ``seq`` after the link ``prev_hash``."""
    return hashlib.sha256(
        canonical(
            seq=seq,
            at=event.at,
            actor=event.actor,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            data=event.data,
            prev_hash=prev_hash,
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


def record(action: str, *, actor: Any = None, obj: Any = None, data: dict | None = None) -> AuditEvent:
    """Append one entry inside the caller's transaction (no lock; sealed into the chain after commit)."""
    return record_many([{"action": action, "actor": actor, "obj": obj, "data": data}])[0]


def record_many(entries: list[dict]) -> list[AuditEvent]:
    """Append entries in order, inside the caller's transaction, with one INSERT and no lock.

    Each entry is ``{"action", "actor", "obj", "data"}`` (all but ``action`` optional). Entries of one
    call are sealed in this order, one after another.
    """
    if not entries:
        return []
    for entry in entries:
        audit_actions.check(entry["action"])
    at = timezone.now()
    events = []
    for entry in entries:
        object_type, object_id = _object_ref(entry.get("obj"))
        events.append(
            AuditEvent(
                at=at,
                actor=_actor_name(entry.get("actor")),
                action=entry["action"],
                object_type=object_type,
                object_id=object_id,
                data=_normalize(json.loads(json.dumps(entry.get("data") or {}, cls=DjangoJSONEncoder))),
            )
        )
    with transaction.atomic(savepoint=False):  # no savepoint: any failure aborts the caller
        _insert(events)
    return events


# Every state change appends here, so the append is plain SQL: the ORM's query building costs more than
# the round trip itself. Values go through the fields' own preparation, so they are stored exactly as
# the ORM would store them. On PostgreSQL a trigger stamps ``txid``.
_COLUMNS = ("at", "actor", "action", "object_type", "object_id", "data")


def _insert(events: list[AuditEvent]) -> None:
    rows.insert(AuditEvent, events, [AuditEvent._meta.get_field(c) for c in _COLUMNS], connection)


def seal(**kwargs):
    """Seal every committed entry now (what the beat task does every second); see ``approvals.sealing``."""
    from approvals import sealing

    return sealing.seal(**kwargs)


def verify_chain(**kwargs):
    """Recompute every link (and check the given checkpoints); see ``approvals.verification``."""
    from approvals import verification

    return verification.verify_chain(**kwargs)
