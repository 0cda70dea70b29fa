"""``cache.clear``: empty a cache directory that lies under the allowed roots.

Refused, with nothing deleted: relative paths, ``..``, paths that resolve outside
the roots (directly or through a symlinked directory), an allowed root itself, and
a cache holding a symlink whose target lies outside the roots. Deleting walks the
tree through directory file descriptors opened with ``O_NOFOLLOW``: a symlink
inside the cache is removed as a link, never followed.

The snapshot is a tar of everything the clear removes, so rollback restores it.
Above ``GRACE_CACHE_SNAPSHOT_MAX_BYTES`` the snapshot is refused, unless the step
sets ``allow_unsnapshotted`` (then the clear runs and cannot be rolled back).
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from rest_framework import serializers

from remediation.actions.base import Action, ActionError, ActionRefused, TransientActionError, registry
from remediation.actions.local.paths import (
    DIR_FLAGS,
    AbsolutePathField,
    Confined,
    allowed_roots,
    canonical_path,
    confine,
    open_dir_below_root,
)

SNAPSHOT_NAME = "cache.tar"


class CacheParams(serializers.Serializer):
    path = AbsolutePathField(help_text="The cache directory (strictly inside one of GRACE_ALLOWED_ROOTS).")
    allow_unsnapshotted = serializers.BooleanField(
        default=False,
        help_text="Above GRACE_CACHE_SNAPSHOT_MAX_BYTES clear without a snapshot (no rollback) instead of refusing.",
    )


@dataclass(frozen=True)
class Entry:
    rel: str
    kind: str  # "file" | "dir" | "link" | "other"
    size: int = 0
    link: str = ""


def _walk(fd: int, prefix: str = "") -> Iterator[tuple[int, str, Entry]]:
    """Yield ``(dir_fd, name, entry)`` depth-first, parents before children, never following a symlink."""
    with os.scandir(fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for item in entries:
        rel = prefix + item.name
        st = item.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            yield fd, item.name, Entry(rel, "link", link=os.readlink(item.name, dir_fd=fd))
        elif stat.S_ISDIR(st.st_mode):
            yield fd, item.name, Entry(rel, "dir")
            child = os.open(item.name, DIR_FLAGS, dir_fd=fd)
            try:
                yield from _walk(child, rel + "/")
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            yield fd, item.name, Entry(rel, "file", size=st.st_size)
        else:
            yield fd, item.name, Entry(rel, "other")


def _open(target: Confined) -> int:
    if not target.path.is_dir():
        raise ActionRefused(f"{target.path}: is not a directory")
    return open_dir_below_root(target.root, target.parts_below_root)


def _target(params: dict) -> Confined:
    return confine(params["path"], must_exist=True)


def _check_links(directory: Path, entries: list[Entry]) -> None:
    roots = allowed_roots()
    for entry in entries:
        if entry.kind != "link":
            continue
        pointed = Path(os.path.realpath(directory / Path(entry.rel).parent / entry.link))
        if not any(pointed.is_relative_to(root) for root in roots):
            raise ActionRefused(
                f"{directory / entry.rel}: symlink to {entry.link} leads outside the allowed roots; nothing was deleted"
            )


def _scan(target: Confined) -> list[Entry]:
    fd = _open(target)
    try:
        entries = [entry for _, _, entry in _walk(fd)]
    finally:
        os.close(fd)
    _check_links(target.path, entries)
    return entries


def observe(params: dict) -> dict:
    target = confine(params["path"], must_exist=False)
    if not target.exists or not target.path.is_dir():
        return {"path": str(target.path), "exists": False, "file_count": None, "bytes": None}
    fd = _open(target)
    try:
        entries = [entry for _, _, entry in _walk(fd)]
    finally:
        os.close(fd)
    return {
        "path": str(target.path),
        "exists": True,
        "file_count": sum(1 for e in entries if e.kind != "dir"),
        "dir_count": sum(1 for e in entries if e.kind == "dir"),
        "bytes": sum(e.size for e in entries),
    }


def snapshot(params: dict, directory: Path) -> dict:
    target = _target(params)
    entries = _scan(target)
    total = sum(e.size for e in entries)
    cap = settings.GRACE_CACHE_SNAPSHOT_MAX_BYTES
    state = {"path": str(target.path), "files": sum(1 for e in entries if e.kind != "dir"), "bytes": total}
    if total > cap:
        if params.get("allow_unsnapshotted"):
            return state | {"skipped": True, "reason": f"{total} bytes is above the snapshot cap of {cap} bytes"}
        raise ActionRefused(
            f"{target.path}: holds {total} bytes, above GRACE_CACHE_SNAPSHOT_MAX_BYTES ({cap}); "
            "set allow_unsnapshotted to clear it without a way back"
        )
    fd = _open(target)
    try:
        with tarfile.open(Path(directory) / SNAPSHOT_NAME, "w", format=tarfile.PAX_FORMAT) as tar:
            for dir_fd, name, entry in _walk(fd):
                _add(tar, dir_fd, name, entry)
    except OSError as exc:
        raise TransientActionError(f"{target.path}: changed while it was being saved ({exc})") from exc
    finally:
        os.close(fd)
    return state | {"file": SNAPSHOT_NAME}


def _add(tar: tarfile.TarFile, dir_fd: int, name: str, entry: Entry) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    info = tarfile.TarInfo(entry.rel)
    info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif entry.kind == "link":
        info.type, info.linkname = tarfile.SYMTYPE, entry.link
        tar.addfile(info)
    elif entry.kind == "file":
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as fh:
            info.size = os.fstat(fd).st_size
            tar.addfile(info, fh)
    # Sockets, FIFOs and devices are not cache content worth keeping: they are removed, not saved.


def _clear(fd: int) -> tuple[int, int, int]:
    files = dirs = size = 0
    with os.scandir(fd) as it:
        entries = list(it)
    for item in entries:
        if item.is_dir(follow_symlinks=False):
            child = os.open(item.name, DIR_FLAGS, dir_fd=fd)
            try:
                f, d, s = _clear(child)
            finally:
                os.close(child)
            os.rmdir(item.name, dir_fd=fd)
            files, dirs, size = files + f, dirs + d + 1, size + s
        else:
            size += item.stat(follow_symlinks=False).st_size if item.is_file(follow_symlinks=False) else 0
            os.unlink(item.name, dir_fd=fd)
            files += 1
    return files, dirs, size


def _clear_target(target: Confined) -> dict:
    fd = _open(target)
    try:
        files, dirs, size = _clear(fd)
    except OSError as exc:
        raise ActionError(f"{target.path}: clearing stopped part-way: {exc}") from exc
    finally:
        os.close(fd)
    return {"removed_files": files, "removed_dirs": dirs, "removed_bytes": size}


def clear(params: dict) -> dict:
    target = _target(params)
    _scan(target)  # refuses, deleting nothing, when a symlink leads out of the roots
    return _clear_target(target)


def rollback(params: dict, state: dict, directory: Path) -> dict:
    target = _target(params)
    if state.get("path") != str(target.path):
        raise ActionRefused(f"snapshot is of {state.get('path')!r}, not of {target.path}")
    if state.get("skipped"):
        raise ActionError(f"{target.path}: was cleared without a snapshot ({state.get('reason')}); nothing to restore")
    archive = Path(directory) / state.get("file", SNAPSHOT_NAME)
    with tarfile.open(archive, "r") as tar:
        members = tar.getmembers()
        links = [Entry(m.name, "link", link=m.linkname) for m in members if m.issym()]
        _check_links(target.path, links)
        for member in members:
            if member.name.startswith("/") or ".." in Path(member.name).parts or member.islnk():
                raise ActionRefused(f"snapshot member {member.name!r} would land outside {target.path}")
        _clear_target(target)  # what the cache wrote since the clear is replaced by the saved content
        tar.extractall(target.path, members=members, filter="tar")
    return {"restored_files": sum(1 for m in members if not m.isdir()), "path": str(target.path)}


registry.register(
    Action(
        name="cache.clear",
        family="local",
        params=CacheParams,
        observe=observe,
        execute=clear,
        snapshot=snapshot,
        rollback=rollback,
        tier=1,
        idempotent=True,
        timeout=120,
        target_param="path",
        resource_kind="cache",
        binds={"path": "target"},
        canonicalize=canonical_path,
        description="Remove everything inside a cache directory under the allowed roots (the directory stays).",
        default_contract=[{"field": "file_count", "op": "==", "value": 0, "within": 5}],
    )
)
