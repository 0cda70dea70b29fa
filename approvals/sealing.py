"""The sealer: chains committed audit entries in batches, one sealer at a time.

Appends take no lock, so entries commit in any order; the sealer decides the
chain's order. Each batch is one transaction that holds the lease, reads the head
(last seal), reads committed entries that have no seal yet, and inserts their
seals: ``seq`` = head + 1, 2, ... and ``hash = sha256(canonical(entry, seq,
prev_hash))``. Unique constraints (seq, entry, prev_hash, hash) are the backstop:
two sealers that somehow ran at once could not both commit, so every committed
entry is sealed exactly once in one unbroken chain.

Finding every committed entry without a lock:

- PostgreSQL. An entry written by a transaction still running is invisible, and ids
  are handed out before commit, so "every id above the last sealed one" would skip
  a late committer. Each entry carries the id of its writing transaction (``txid``,
  set by a trigger). A pass first reads the snapshot's ``xmin``: every transaction
  below it has finished, so every committed entry below it is visible and gets
  sealed in this pass. The last batch of a pass records that ``xmin`` as its
  ``horizon``; the next pass only reads entries with ``txid >= horizon`` (the
  window), in id order from a cursor, skipping those already sealed. An entry
  that commits during a pass, behind its cursor, belongs to a transaction at or
  after the pass's ``xmin``, so the next pass's window holds it. Lease: ``pg_try_advisory_xact_lock`` in the batch's
  transaction, held by one session anywhere in the fleet and released at commit or
  when the session dies.
- SQLite. Every transaction is IMMEDIATE: a sealing batch holds the database's
  single write lock, so nothing is in flight and later entries get larger ids. The
  batch seals entries after the last sealed one, in id order. The write lock is the
  lease (SQLite is one machine's database).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from approvals.audit import canonical
from approvals.models import GENESIS_HASH, AuditEvent, AuditSeal

# Key of the PostgreSQL advisory lock that makes sealing single-flight ("GRACESEA").
LEASE_KEY = 0x4752414345534541 - (1 << 63)
_ENTRY_FIELDS = ("id", "at", "actor", "action", "object_type", "object_id", "data")


@dataclass(frozen=True)
class SealResult:
    sealed: int  # entries sealed by this call
    head: int  # seq of the chain's head afterwards (0: empty)
    busy: bool = False  # another sealer held the lease: this call sealed nothing


@dataclass(frozen=True)
class _Head:
    seq: int
    hash: str
    event_id: int
    horizon: int


def head() -> _Head:
    """The last link of the chain (seq 0 and the genesis hash when nothing is sealed yet)."""
    last = AuditSeal.objects.order_by("-seq").values_list("seq", "hash", "event_id", "horizon").first()
    if last is None:
        return _Head(0, GENESIS_HASH, 0, 0)
    return _Head(last[0], last[1], last[2], last[3] or 0)


def seal(*, wait: bool = False, batch_size: int | None = None, max_seconds: float = 20.0) -> SealResult:
    """Seal every entry committed before this call (and any that commit meanwhile, within ``max_seconds``).

    ``wait=False`` (beat): when another sealer holds the lease, return at once with ``busy``.
    ``wait=True`` (tests, on-demand checkpoints): wait for the lease instead.
    """
    limit = batch_size or settings.GRACE_AUDIT_SEAL_BATCH
    deadline = time.monotonic() + max_seconds
    xmin = _snapshot_xmin()  # before the first batch reads anything (see the module's docstring)
    cursor, total = 0, 0
    while True:
        outcome = _seal_batch(limit, xmin=xmin, cursor=cursor, wait=wait)
        if outcome is None:
            return SealResult(total, head().seq, busy=True)
        sealed, cursor, head_seq, exhausted = outcome
        total += sealed
        if exhausted or time.monotonic() > deadline:
            return SealResult(total, head_seq)


def _snapshot_xmin() -> int | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        return cursor.fetchone()[0]


def _take_lease(wait: bool) -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: the IMMEDIATE transaction already holds the write lock
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LEASE_KEY])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LEASE_KEY])
        return bool(cursor.fetchone()[0])


def _seal_batch(limit: int, *, xmin: int | None, cursor: int, wait: bool) -> tuple[int, int, int, bool] | None:
    """One transaction: seal up to ``limit`` entries. Returns (sealed, cursor, head seq, exhausted), or None
    when another sealer holds the lease."""
    with transaction.atomic():
        if not _take_lease(wait):
            return None
        last = head()
        entries = AuditEvent.objects.order_by("id")
        if xmin is None:
            entries = entries.filter(id__gt=last.event_id)
        else:
            # The window, in id order from this pass's cursor (an index range, no anti-join to plan): entries
            # of it sealed by an earlier pass are dropped below.
            entries = entries.filter(txid__gte=last.horizon, id__gt=cursor)
        rows = list(entries.values_list(*_ENTRY_FIELDS)[: limit + 1])
        exhausted = len(rows) <= limit
        rows = rows[:limit]
        if not rows:
            return 0, cursor, last.seq, True
        cursor = rows[-1][0]
        if xmin is not None:
            done = _sealed_among([row[0] for row in rows])
            rows = [row for row in rows if row[0] not in done]
            if not rows:
                return 0, cursor, last.seq, exhausted
        # On PostgreSQL only the pass's last batch may move the horizon (to the xmin read before its first).
        horizon = None if xmin is None else (xmin if exhausted else last.horizon)
        seq, prev_hash, links = last.seq, last.hash, []
        for pk, at, actor, action, object_type, object_id, data in rows:
            seq += 1
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
            digest = hashlib.sha256(document).hexdigest()
            links.append((seq, pk, prev_hash, digest))
            prev_hash = digest
        _insert(links, sealed_at=timezone.now(), horizon=horizon)
        return len(links), cursor, seq, exhausted


def _sealed_among(ids: list[int]) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT event_id FROM approvals_auditseal WHERE event_id = ANY(%s)", [ids])
        return {row[0] for row in cursor.fetchall()}


def _insert(links: list[tuple], *, sealed_at, horizon: int | None) -> None:
    """Insert (seq, event_id, prev_hash, hash) links: on PostgreSQL as four arrays in one statement, on SQLite
    with executemany (both in C, with no per-value work in Python)."""
    at = AuditSeal._meta.get_field("sealed_at").get_db_prep_save(sealed_at, connection)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            columns = [list(column) for column in zip(*links, strict=True)]
            cursor.execute(
                "INSERT INTO approvals_auditseal (seq, event_id, prev_hash, hash, sealed_at, horizon) "
                "SELECT seq, event_id, prev_hash, hash, %s, %s "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::varchar[], %s::varchar[]) "
                "AS link(seq, event_id, prev_hash, hash)",
                [at, horizon, *columns],
            )
        else:
            cursor.executemany(
                "INSERT INTO approvals_auditseal (seq, event_id, prev_hash, hash, sealed_at, horizon) "
                "VALUES (%s, %s, %s, %s, %s, NULL)",
                [(*link, at) for link in links],
            )


def pending() -> tuple[int, float | None]:
    """Entries committed but not sealed yet, and the age in seconds of the oldest (None when there is none)."""
    last = head()
    entries = AuditEvent.objects.all()
    if connection.vendor == "postgresql":
        entries = entries.filter(txid__gte=last.horizon, seal__isnull=True)
    else:
        entries = entries.filter(id__gt=last.event_id)
    oldest = entries.order_by("id").values_list("at", flat=True).first()
    if oldest is None:
        return 0, None
    return entries.count(), max(0.0, (timezone.now() - oldest).total_seconds())
