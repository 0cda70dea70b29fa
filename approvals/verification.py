"""``verify_audit``: recompute the chain, and check it against signed checkpoints.

Without checkpoints, recomputing the chain catches an entry or link changed in place
and a link removed from the middle. It cannot catch a chain that was cut short
(its tail deleted) or rewritten and re-hashed from some point on: whoever can
change the database can recompute every hash. Checkpoints, signed with a key that
is not in the database and kept where the database's owner cannot rewrite them,
catch both: each one fixes the head hash at its size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db import connection

from approvals.audit import canonical
from approvals.checkpoints import Checkpoint
from approvals.models import GENESIS_HASH, AuditEvent, AuditSeal


@dataclass(frozen=True)
class ChainReport:
    count: int  # links verified (the chain's length when it is intact)
    broken_seq: int | None = None  # the first seq the chain or a checkpoint does not vouch for
    reason: str = ""
    pending: int = 0  # committed entries the sealer has not reached yet
    checkpoints: int = 0  # checkpoints the chain was checked against
    latest: Checkpoint | None = None  # the largest of them
    problems: tuple[str, ...] = ()  # checkpoint records that are unreadable, forged or of another log

    @property
    def ok(self) -> bool:
        return self.broken_seq is None and not self.problems


_LINK_FIELDS = (
    "seq",
    "prev_hash",
    "hash",
    "event__at",
    "event__actor",
    "event__action",
    "event__object_type",
    "event__object_id",
    "event__data",
)


def verify_chain(*, checkpoints: Iterable[Checkpoint] = (), problems: Iterable[str] = ()) -> ChainReport:
    """Recompute every link in seq order; check each checkpoint's head at its size; report the first break."""
    ordered = sorted(checkpoints, key=lambda c: (c.size, c.time))
    problems = tuple(problems)
    if lost := stranded():
        problems += (f"entries {', '.join(map(str, lost))} were committed but the chain skipped them",)
    vouched = 0  # the chain up to here matches a checkpoint
    pending_cp = 0
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0

    def report(broken: int | None = None, reason: str = "") -> ChainReport:
        return ChainReport(count, broken, reason, _pending(), len(ordered), ordered[-1] if ordered else None, problems)

    def check_checkpoints(seq: int, head: str) -> ChainReport | None:
        nonlocal pending_cp, vouched
        while pending_cp < len(ordered) and ordered[pending_cp].size == seq:
            checkpoint = ordered[pending_cp]
            if checkpoint.head != head:
                return report(
                    vouched + 1,
                    f"the chain's head at seq {seq} is {head[:12]}, but the checkpoint signed at "
                    f"{checkpoint.time:%Y-%m-%d %H:%M:%S} UTC ({checkpoint.where}) says {checkpoint.head[:12]}: "
                    f"the chain was rewritten somewhere in seq {vouched + 1}..{seq}",
                )
            vouched = seq
            pending_cp += 1
        return None

    if broken := check_checkpoints(0, GENESIS_HASH):
        return broken
    for seq, stored_prev, stored_hash, at, actor, action, object_type, object_id, data in _links():
        if seq != expected_seq:
            return report(expected_seq, f"seq {expected_seq} is missing (next present is {seq})")
        if stored_prev != prev_hash:
            return report(seq, "prev_hash does not match the previous link's hash")
        document = canonical(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            data=data,
            prev_hash=prev_hash,
        )
        if hashlib.sha256(document).hexdigest() != stored_hash:
            return report(seq, "stored hash does not match the entry's contents")
        if broken := check_checkpoints(seq, stored_hash):
            return broken
        prev_hash, expected_seq, count = stored_hash, expected_seq + 1, count + 1
    if pending_cp < len(ordered):
        checkpoint = ordered[-1]
        return report(
            count + 1,
            f"seq {count + 1} is missing: the chain ends at seq {count}, but the checkpoint signed at "
            f"{checkpoint.time:%Y-%m-%d %H:%M:%S} UTC ({checkpoint.where}) covers {checkpoint.size} (tail deleted)",
        )
    return report()


# PostgreSQL: read the links straight from a server-side cursor, with the time already in the form the hash
# covers and the data as text (a million links in seconds instead of through the ORM's converters).
_PG_LINKS = (
    "SELECT s.seq, s.prev_hash, s.hash, "
    "to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00', "
    "e.actor, e.action, e.object_type, e.object_id, e.data::text "
    "FROM approvals_auditseal s JOIN approvals_auditevent e ON e.id = s.event_id ORDER BY s.seq"
)


def _links(chunk: int = 10000) -> Iterator[tuple]:
    """Every link with its entry, in seq order."""
    if connection.vendor != "postgresql":
        yield from AuditSeal.objects.order_by("seq").values_list(*_LINK_FIELDS).iterator(chunk_size=chunk)
        return
    loads = json.loads
    with connection.chunked_cursor() as cursor:
        cursor.execute(_PG_LINKS)
        while rows := cursor.fetchmany(chunk):
            for seq, prev_hash, digest, at, actor, action, object_type, object_id, data in rows:
                yield seq, prev_hash, digest, at, actor, action, object_type, object_id, loads(data)


def _pending() -> int:
    from approvals import sealing

    return sealing.pending()[0]


def stranded() -> list[int]:
    """Ids of entries behind the sealer's position that have no seal: none, unless rows were inserted
    around the sealer (an entry the chain will never include). At most 10."""
    from approvals import sealing

    head = sealing.head()
    entries = AuditEvent.objects.filter(seal__isnull=True)
    if connection.vendor == "postgresql":
        entries = entries.exclude(txid__gte=head.horizon)
    else:
        entries = entries.filter(id__lte=head.event_id)
    return list(entries.order_by("id").values_list("id", flat=True)[:10])
