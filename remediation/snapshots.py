"""Safe-hold snapshots: files an action saved before changing anything, with a
sha256 manifest per file and overall, verified before any restore."""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from approvals import audit
from remediation.models import Snapshot


class SnapshotIntegrityError(Exception):
    """A snapshot's files do not match its manifest: restoring from it is refused."""


class QuotaExceeded(Exception):
    """Taking this snapshot would pass a storage limit of this host: it is refused, with the limit named."""


def root() -> Path:
    return Path(settings.GRACE_SNAPSHOT_DIR)


def directory_for(run_id: int, step_index: int) -> Path:
    path = root() / f"run-{run_id}-step-{step_index}"
    try:
        path.mkdir(exist_ok=True)
    except FileNotFoundError:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(directory: Path) -> dict:
    """``{"files": {relative path: sha256}, "bytes": total, "sha256": digest over the sorted entries}``.
    Symlinks are recorded as such, never followed."""
    files: dict[str, str] = {}
    total = 0
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_symlink():
            files[rel] = "symlink:" + hashlib.sha256(str(path.readlink()).encode()).hexdigest()
        elif path.is_file():
            files[rel] = _digest(path)
            total += path.stat().st_size
    overall = hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(files.items())).encode()).hexdigest()
    return {"files": files, "bytes": total, "sha256": overall}


def verify(snapshot: Snapshot) -> None:
    """Raise SnapshotIntegrityError unless the files on disk match the manifest exactly."""
    if snapshot.purged_at is not None:
        raise SnapshotIntegrityError(f"snapshot of step {snapshot.step_index} was purged by retention")
    if not snapshot.manifest:
        return  # a state-only snapshot (no files)
    directory = Path(snapshot.path)
    if not directory.is_dir():
        raise SnapshotIntegrityError(f"snapshot directory {directory} is gone")
    current = build_manifest(directory)
    if current["sha256"] != snapshot.manifest.get("sha256"):
        expected, actual = snapshot.manifest.get("files", {}), current["files"]
        changed = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
        raise SnapshotIntegrityError(f"snapshot files do not match the manifest: {', '.join(changed[:10])}")


# Files SQLite keeps beside a database: a snapshot of one copies what they hold too.
_SIDECARS = ("-wal", "-journal")


def estimate(target: str, *, stop_after: int | None = None) -> int:
    """Bytes a snapshot of ``target`` will take: a file with its SQLite sidecars, or a directory's files
    (counting stops once past ``stop_after``). 0 for targets that are not local paths (PostgreSQL, cloud).
    ``target`` is a plan step's canonical target (``local:/path``) or a path."""
    target = target.removeprefix("local:")
    if not target.startswith("/"):
        return 0
    path = Path(target)
    try:
        if path.is_file():
            return path.stat().st_size + sum(
                sidecar.stat().st_size for suffix in _SIDECARS if (sidecar := Path(f"{target}{suffix}")).is_file()
            )
        total = 0
        if path.is_dir():
            for child in path.rglob("*"):
                if child.is_file() and not child.is_symlink():
                    total += child.stat().st_size
                    if stop_after is not None and total > stop_after:
                        break
        return total
    except OSError:
        return 0


def held_bytes(*, target: str | None = None) -> int:
    """Bytes of this host's snapshots that retention has not purged (of one canonical target, or all)."""
    held = Snapshot.objects.filter(host__in=["", settings.GRACE_HOST], purged_at__isnull=True)
    if target is not None:
        held = held.filter(target=target)
    return held.aggregate(total=Sum("size_bytes"))["total"] or 0


def _mib(size: int) -> str:
    return f"{size / 1024**2:,.1f} MiB"


def check_quota(target: str, adding: int, *, copied: bool = False) -> None:
    """Raise QuotaExceeded when ``adding`` bytes more for ``target`` (its canonical form, as the planner and
    every Snapshot row have it: one file named several ways is one target) would pass this host's per-target
    or total quota, or leave less than GRACE_SNAPSHOT_MIN_FREE on the snapshot disk (``copied``: the bytes
    are already on that disk)."""
    if adding <= 0:
        return
    limit = settings.GRACE_SNAPSHOT_TARGET_QUOTA
    held = held_bytes(target=target)
    if held + adding > limit:
        raise QuotaExceeded(
            f"snapshot quota: {target} already holds {_mib(held)} of snapshots and this one needs {_mib(adding)} "
            f"(GRACE_SNAPSHOT_TARGET_QUOTA is {_mib(limit)}); wait for retention or roll back older runs"
        )
    limit = settings.GRACE_SNAPSHOT_TOTAL_QUOTA
    held = held_bytes()
    if held + adding > limit:
        raise QuotaExceeded(
            f"snapshot quota: host {settings.GRACE_HOST} already holds {_mib(held)} of snapshots and this one "
            f"needs {_mib(adding)} (GRACE_SNAPSHOT_TOTAL_QUOTA is {_mib(limit)})"
        )
    root().mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root()).free
    if free - (0 if copied else adding) < settings.GRACE_SNAPSHOT_MIN_FREE:
        raise QuotaExceeded(
            f"snapshot disk: {_mib(free)} free, and this snapshot ({_mib(adding)}) would leave less than "
            f"GRACE_SNAPSHOT_MIN_FREE ({_mib(settings.GRACE_SNAPSHOT_MIN_FREE)})"
        )


def expired(*, now=None):
    now = now or timezone.now()
    return Snapshot.objects.filter(
        created_at__lt=now - timedelta(days=settings.GRACE_SNAPSHOT_RETENTION_DAYS), purged_at__isnull=True
    )


def purge_expired(*, now=None) -> int:
    """Delete this host's snapshot files older than the retention period (the rows stay, marked purged);
    another host's snapshots are purged by that host's agent."""
    now = now or timezone.now()
    purged = 0
    for snap in expired(now=now).filter(host__in=["", settings.GRACE_HOST]).iterator():
        with transaction.atomic():
            if Snapshot.objects.filter(pk=snap.pk, purged_at__isnull=True).update(purged_at=now):
                if snap.path:
                    shutil.rmtree(snap.path, ignore_errors=True)
                audit.record("snapshot.purged", obj=snap, data={"run": snap.run_id, "step": snap.step_index})
                purged += 1
    return purged
