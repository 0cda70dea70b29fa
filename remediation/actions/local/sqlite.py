"""SQLite maintenance: WAL checkpoint, integrity check, VACUUM and ANALYZE.

Snapshots are made with SQLite's online backup API into the snapshot directory
and rollback restores through the backup API too, so a live database is never
copied or overwritten file-wise. ``-wal`` and ``-shm`` files are never deleted:
the WAL holds committed transactions that are not in the main file yet.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from django.conf import settings
from rest_framework import serializers

from remediation.actions.base import Action, ActionError, ActionRefused, TransientActionError, registry
from remediation.actions.local.paths import AbsolutePathField, Confined, canonical_path, confine

BACKUP_NAME = "database.sqlite3"
# How long observe waits for the write lock before it reports the database busy.
BUSY_PROBE_MS = 200


class SqliteParams(serializers.Serializer):
    path = AbsolutePathField(help_text="The SQLite database file (under GRACE_ALLOWED_ROOTS).")


def _uri(path: Path, mode: str) -> str:
    return f"{path.as_uri()}?mode={mode}"


def _error(exc: sqlite3.Error, path: Path) -> ActionError:
    message = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in message or "busy" in message):
        return TransientActionError(f"sqlite {path}: {message}")
    return ActionError(f"sqlite {path}: {message}")


@contextmanager
def _connect(path: Path, *, mode: str = "rw", busy_ms: int | None = None) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode with a busy timeout; ``mode=rw`` never creates a missing file."""
    busy_ms = settings.GRACE_SQLITE_BUSY_TIMEOUT_MS if busy_ms is None else busy_ms
    try:
        conn = sqlite3.connect(_uri(path, mode), uri=True, timeout=busy_ms / 1000, isolation_level=None)
    except sqlite3.Error as exc:
        raise _error(exc, path) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        yield conn
    except sqlite3.Error as exc:
        raise _error(exc, path) from exc
    finally:
        conn.close()


def _target(params: dict) -> Confined:
    return confine(params["path"], must_exist=True)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _integrity(conn: sqlite3.Connection, pragma: str) -> str:
    rows = [row[0] for row in conn.execute(pragma).fetchall()]
    return "ok" if rows == ["ok"] else "; ".join(str(r) for r in rows)


def _busy(path: Path) -> bool:
    """Can a write lock be taken within a short timeout?"""
    try:
        with _connect(path, busy_ms=BUSY_PROBE_MS) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
    except TransientActionError:
        return True
    return False


def observe(params: dict) -> dict:
    target = confine(params["path"], must_exist=False)
    path = target.path
    facts: dict = {"path": str(path), "exists": target.exists and path.is_file()}
    if not facts["exists"]:
        return facts | dict.fromkeys(("db_bytes", "wal_bytes", "page_count", "freelist_count", "integrity", "busy"))
    # Sizes first: opening connections must not change what is reported.
    facts["db_bytes"] = _size(path)
    facts["wal_bytes"] = _size(Path(f"{path}-wal"))
    # A read-only connection stays open while the write-lock probe runs, so the probe's
    # connection is never the last one to close (which would checkpoint the WAL).
    with _connect(path, mode="ro") as conn:
        facts["page_count"] = conn.execute("PRAGMA page_count").fetchone()[0]
        facts["freelist_count"] = conn.execute("PRAGMA freelist_count").fetchone()[0]
        facts["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
        facts["integrity"] = _integrity(conn, "PRAGMA quick_check(20)")
        facts["busy"] = _busy(path)
    return facts


def snapshot(params: dict, directory: Path) -> dict:
    """A consistent copy (WAL contents included) made with the backup API."""
    path = _target(params).path
    dest = Path(directory) / BACKUP_NAME
    with _connect(path, mode="ro") as src, closing(sqlite3.connect(dest, isolation_level=None)) as dst:
        # A new private file: no journal and no syncs while it is written, one fsync once it is whole.
        dst.execute("PRAGMA journal_mode=OFF")
        dst.execute("PRAGMA synchronous=OFF")
        src.backup(dst)
        # The copy is a self-contained file: no -wal/-shm appear beside it when it is read later.
        dst.execute("PRAGMA journal_mode=DELETE")
        check = _integrity(dst, "PRAGMA quick_check")
        page_count = dst.execute("PRAGMA page_count").fetchone()[0]
    _fsync(dest)
    if check != "ok":
        raise ActionError(f"sqlite {path}: the backup failed its integrity check: {check}")
    return {"path": str(path), "file": BACKUP_NAME, "page_count": page_count, "db_bytes": _size(path)}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rollback(params: dict, state: dict, directory: Path) -> dict:
    """Write the snapshot back into the live database through the backup API (under its write lock)."""
    path = _target(params).path
    if state.get("path") != str(path):
        raise ActionRefused(f"snapshot is of {state.get('path')!r}, not of {path}")
    source = Path(directory) / state.get("file", BACKUP_NAME)
    if not source.is_file():
        raise ActionError(f"snapshot file {source} is missing")
    src_uri = f"{source.as_uri()}?mode=ro&immutable=1"
    with closing(sqlite3.connect(src_uri, uri=True)) as src, _connect(path) as dst:
        try:
            src.backup(dst)
        except sqlite3.Error as exc:
            raise _error(exc, path) from exc
        pages = dst.execute("PRAGMA page_count").fetchone()[0]
        journal_mode = dst.execute("PRAGMA journal_mode").fetchone()[0]
    return {"restored": True, "page_count": pages, "journal_mode": journal_mode}


def checkpoint(params: dict) -> dict:
    path = _target(params).path
    before = _size(Path(f"{path}-wal"))
    with _connect(path) as conn:
        busy, log_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if log_frames == -1:
        return {"checkpointed": False, "reason": "the database is not in WAL mode", "wal_bytes_before": before}
    if busy:
        # Readers kept the WAL from being reset; a later attempt usually succeeds.
        raise TransientActionError(
            f"sqlite {path}: checkpoint incomplete, readers are still using the WAL "
            f"({checkpointed}/{log_frames} frames copied)"
        )
    return {
        "checkpointed": True,
        "log_frames": log_frames,
        "checkpointed_frames": checkpointed,
        "wal_bytes_before": before,
        "wal_bytes_after": _size(Path(f"{path}-wal")),
    }


def integrity_check(params: dict) -> dict:
    path = _target(params).path
    with _connect(path, mode="ro") as conn:
        result = _integrity(conn, "PRAGMA integrity_check(100)")
    return {"integrity": result, "ok": result == "ok"}


def vacuum(params: dict) -> dict:
    path = _target(params).path
    with _connect(path) as conn:
        before = conn.execute("PRAGMA page_count").fetchone()[0], conn.execute("PRAGMA freelist_count").fetchone()[0]
        conn.execute("VACUUM")
        after = conn.execute("PRAGMA page_count").fetchone()[0], conn.execute("PRAGMA freelist_count").fetchone()[0]
    return {
        "page_count_before": before[0],
        "freelist_count_before": before[1],
        "page_count_after": after[0],
        "freelist_count_after": after[1],
    }


def analyze(params: dict) -> dict:
    path = _target(params).path
    with _connect(path) as conn:
        conn.execute("ANALYZE")
        tables = conn.execute("SELECT count(DISTINCT tbl) FROM sqlite_stat1").fetchone()[0]
    return {"analyzed": True, "tables_with_statistics": tables}


_COMMON = {
    "family": "local",
    "params": SqliteParams,
    "observe": observe,
    "target_param": "path",
    "resource_kind": "sqlite",
    "binds": {"path": "target"},
    "canonicalize": canonical_path,
}
_REVERSIBLE = {"snapshot": snapshot, "rollback": rollback}

registry.register(
    Action(
        name="sqlite.checkpoint",
        execute=checkpoint,
        tier=1,
        idempotent=True,
        timeout=60,
        description="Copy the WAL into the database and truncate it (PRAGMA wal_checkpoint(TRUNCATE)).",
        default_contract=[{"field": "wal_bytes", "op": "<=", "value": 1048576, "within": 10}],
        **_COMMON,
        **_REVERSIBLE,
    )
)
registry.register(
    Action(
        name="sqlite.integrity_check",
        execute=integrity_check,
        tier=1,
        idempotent=True,
        timeout=300,
        description="Run PRAGMA integrity_check (read-only).",
        default_contract=[{"field": "integrity", "op": "==", "value": "ok"}],
        **_COMMON,
    )
)
registry.register(
    Action(
        name="sqlite.vacuum",
        execute=vacuum,
        tier=2,
        idempotent=True,
        timeout=600,
        description="Rebuild the database file (VACUUM): reclaims free pages, blocks writers while it runs.",
        default_contract=[{"field": "freelist_count", "op": "==", "value": 0}],
        **_COMMON,
        **_REVERSIBLE,
    )
)
registry.register(
    Action(
        name="sqlite.analyze",
        execute=analyze,
        tier=1,
        idempotent=True,
        timeout=300,
        description="Refresh the query planner's statistics (ANALYZE).",
        default_contract=[{"field": "integrity", "op": "==", "value": "ok"}],
        **_COMMON,
        **_REVERSIBLE,
    )
)
