"""Confinement of local actions to the configured allowed roots.

A path is accepted only when it is absolute, has no ``..`` component and, with
every symlink resolved, lies inside one of ``GRACE_ALLOWED_ROOTS``. Code that
then opens or deletes walks down from the root with ``O_NOFOLLOW`` so a symlink
swapped in after the check cannot lead out either.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from rest_framework import serializers

from remediation.actions.base import ActionRefused, ActionUnavailable

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class AbsolutePathField(serializers.CharField):
    """An absolute filesystem path (containment is checked when the action runs)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 4096)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if "\x00" in value:
            raise serializers.ValidationError("must not contain NUL bytes")
        if not os.path.isabs(value):
            raise serializers.ValidationError("must be an absolute path")
        return value


def canonical_path(params: dict) -> dict:
    """The step's ``path`` with every symlink resolved, so one file is one target however it is spelled."""
    return {**params, "path": os.path.realpath(params["path"])}


def allowed_roots() -> list[Path]:
    roots = []
    for raw in settings.GRACE_ALLOWED_ROOTS:
        if not os.path.isabs(raw):
            raise ActionUnavailable(f"GRACE_ALLOWED_ROOTS must hold absolute directories, got {raw!r}")
        roots.append(Path(os.path.realpath(raw)))
    if not roots:
        raise ActionUnavailable("GRACE_ALLOWED_ROOTS is empty: local actions may touch nothing")
    return roots


@dataclass(frozen=True)
class Confined:
    """A path resolved inside an allowed root."""

    path: Path  # fully resolved
    root: Path  # the allowed root it lies in
    exists: bool

    @property
    def parts_below_root(self) -> tuple[str, ...]:
        return self.path.relative_to(self.root).parts


def confine(raw: str | os.PathLike, *, must_exist: bool = True, allow_root: bool = False) -> Confined:
    """Resolve ``raw`` and check it lies under an allowed root; ``ActionRefused`` otherwise."""
    given = Path(raw)
    if not given.is_absolute():
        raise ActionRefused(f"{raw}: must be an absolute path")
    if ".." in given.parts:
        raise ActionRefused(f"{raw}: '..' is not allowed in paths")
    try:
        resolved, exists = given.resolve(strict=True), True
    except FileNotFoundError:
        if must_exist:
            raise ActionRefused(f"{raw}: does not exist") from None
        resolved, exists = given.resolve(strict=False), False
    except (OSError, RuntimeError) as exc:  # symlink loops, permission denied on a component
        raise ActionRefused(f"{raw}: cannot be resolved ({exc})") from None
    roots = allowed_roots()
    for root in roots:
        if resolved.is_relative_to(root):
            if resolved == root and not allow_root:
                raise ActionRefused(f"{raw}: is an allowed root itself; name a directory or file inside it")
            return Confined(resolved, root, exists)
    listed = ", ".join(str(r) for r in roots)
    raise ActionRefused(f"{raw}: resolves to {resolved}, outside the allowed roots ({listed}); nothing was touched")


@contextmanager
def open_parent_dir(target: Confined) -> Iterator[tuple[int, str]]:
    """``(dir_fd, name)`` for the target's parent, opened from the root without following symlinks."""
    parts = target.parts_below_root
    if not parts:
        raise ActionRefused(f"{target.path}: is an allowed root itself")
    fd = open_dir_below_root(target.root, parts[:-1])
    try:
        yield fd, parts[-1]
    finally:
        os.close(fd)


def open_dir_below_root(root: Path, parts: tuple[str, ...]) -> int:
    """Open ``root/parts...`` as a directory, component by component, refusing any symlink on the way."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in parts:
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise ActionRefused(f"{root.joinpath(*parts)}: cannot open {part!r} without following links ({exc})")
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file_nofollow(target: Confined) -> bytes:
    with open_parent_dir(target) as (dir_fd, name):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise ActionRefused(f"{target.path}: cannot open without following links ({exc})") from None
        with os.fdopen(fd, "rb") as fh:
            return fh.read()


def write_file_atomic(target: Confined, data: bytes) -> None:
    """Replace the file's contents atomically (temporary file + rename in the same directory), keeping its mode."""
    with open_parent_dir(target) as (dir_fd, name):
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
        tmp = f".{name}.grace-{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), mode)
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            raise
        os.fsync(dir_fd)
