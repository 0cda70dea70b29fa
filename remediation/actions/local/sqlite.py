"""SQLite maintenance: WAL checkpoint, integrity check, VACUUM, ANALYZE, and WAL mode for a locked database.

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

import psutil
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
        return facts | dict.fromkeys(
            ("db_bytes", "wal_bytes", "page_count", "freelist_count", "journal_mode", "integrity", "busy")
        )
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


# WAL mode needs the processes using the database to share memory on one host: never on these.
NETWORK_FILESYSTEMS = {
    "nfs",
    "nfs4",
    "cifs",
    "smbfs",
    "smb3",
    "9p",
    "afs",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
    "lustre",
    "davfs",
    "fuse.s3fs",
}


def _filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (the longest mount point above it)."""
    best, fstype = "", ""
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") or "/"
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, fstype = mount, part.fstype
    return fstype


def _holders(path: Path) -> list[str]:
    """Processes this host lets GRACE see with the database (or its -wal / -journal) open: "name (pid N)"."""
    names = {str(path), f"{path}-wal", f"{path}-journal"}
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if any(f.path in names for f in proc.open_files()):
                found.append(f"{proc.info['name']} (pid {proc.info['pid']})")
        except psutil.Error:
            continue
    return found


def _wal_refusal(path: Path, mode: str) -> str | None:
    """Why switching ``path`` to WAL mode would not help or is unsafe; None when it may go ahead."""
    if mode == "wal":
        holders = ", ".join(_holders(path)) or "none that GRACE can see"
        return (
            f"sqlite {path} is already in WAL mode, where readers never block the writer: the lock is held by a "
            f"writer's long transaction; processes with the database open: {holders}"
        )
    fstype = _filesystem(path)
    if fstype in NETWORK_FILESYSTEMS:
        return f"sqlite {path} is on a {fstype} filesystem, where WAL mode is unsafe"
    return None


def _journal_mode(path: Path) -> str:
    with _connect(path, mode="ro") as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def wal_snapshot(params: dict, directory: Path) -> dict:
    """What rollback needs: the journal mode before (no copy of the data: only the mode changes)."""
    path = _target(params).path
    mode = _journal_mode(path)
    refusal = _wal_refusal(path, mode)
    if refusal:
        raise ActionRefused(refusal)
    return {"path": str(path), "journal_mode": mode}


def enable_wal(params: dict) -> dict:
    path = _target(params).path
    mode = _journal_mode(path)
    refusal = _wal_refusal(path, mode)
    if refusal:
        raise ActionRefused(refusal)
    with _connect(path) as conn:
        now = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if now != "wal":
        raise TransientActionError(f"sqlite {path}: still in {now} mode: another connection kept it from switching")
    return {"journal_mode_before": mode, "journal_mode": now}


def wal_rollback(params: dict, state: dict, directory: Path) -> dict:
    """Put the journal mode back as it was (the data itself was never touched)."""
    path = _target(params).path
    if state.get("path") != str(path):
        raise ActionRefused(f"snapshot is of {state.get('path')!r}, not of {path}")
    before = str(state.get("journal_mode", ""))
    if before not in ("delete", "truncate", "persist", "memory", "off", "wal"):
        raise ActionError(f"snapshot holds no journal mode to restore ({before!r})")
    with _connect(path) as conn:
        now = conn.execute(f"PRAGMA journal_mode={before}").fetchone()[0]  # one of the names above
    return {
        "restored": now == before,
        "journal_mode": now,
        "verified": now == before,
        "detail": "" if now == before else f"still in {now} mode",
    }


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
registry.register(
    Action(
        name="sqlite.enable_wal",
        execute=enable_wal,
        snapshot=wal_snapshot,
        rollback=wal_rollback,
        tier=1,
        idempotent=False,  # re-observed through its contract after a lost worker, never run twice blindly
        timeout=60,
        description=(
            "Switch a locked SQLite database from a rollback journal to WAL mode, where readers no longer block "
            "the writer; refused when it is already in WAL mode (a writer holds the lock: its holders are named) "
            "or on a network filesystem. Rollback restores the previous journal mode; the data is not touched."
        ),
        default_contract=[
            {"field": "journal_mode", "op": "==", "value": "wal"},
            {"field": "busy", "op": "==", "value": False, "within": 30},
        ],
        family="local",
        params=SqliteParams,
        observe=observe,
        target_param="path",
        resource_kind="sqlite",
        binds={"path": "target"},
        canonicalize=canonical_path,
    )
)
