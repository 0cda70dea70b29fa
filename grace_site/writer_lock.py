"""Turns at SQLite's single writer lock for the intake's own transactions.

SQLite lets one connection write at a time. A connection that finds the lock taken waits in SQLite's busy
handler, which sleeps between tries (1, 2, 5, 10 ... up to 100 ms) whether or not the lock was freed meanwhile:
under steady contention the lock sits idle while its waiters sleep, and whoever happens to try at the right
moment takes it again. The intake's writers (the request threads storing deliveries, the consumers applying
them) queue on a file lock beside the database instead: the kernel wakes the next waiter the moment the holder
lets go, so the lock changes hands without idle gaps.

Only GRACE's own short intake transactions take this lock, and each holds it for one transaction, so a wait is
bounded by theirs; a writer that does not take it (an admin save, a pipeline stage) is waited for with SQLite's
busy timeout as before. The kernel drops a file lock when its process dies. SQLite's own lock stays what keeps
writes apart; this one only decides who goes next. On PostgreSQL, and inside a
transaction already open (where the database lock may be held), ``turn`` does nothing.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction

_local = threading.local()


def _descriptor(path: str) -> int:
    """This thread's descriptor for the lock file: a file lock excludes other open descriptions, so each thread
    opens its own (threads of a process queue like processes do)."""
    fds = getattr(_local, "fds", None)
    if fds is None or _local.pid != os.getpid():
        # A forked child (a Celery pool process) must not share its parent's open descriptions: it opens its own.
        for inherited in (fds or {}).values():
            os.close(inherited)
        fds = _local.fds = {}
        _local.pid = os.getpid()
    fd = fds.get(path)
    if fd is None:
        fd = fds[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return fd


def lock_path(using: str = "default") -> str | None:
    """The lock file of a file-backed SQLite database (None for PostgreSQL and in-memory databases)."""
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return None
    return f"{connection.settings_dict['NAME']}-writer"


@contextmanager
def turn(using: str = "default") -> Iterator[None]:
    """Wait for this database's writer turn (SQLite, outside a transaction), hold it for the block."""
    path = None if connections[using].in_atomic_block else lock_path(using)
    if path is None:
        yield
        return
    with held(path):
        yield


@contextmanager
def atomic(using: str = "default") -> Iterator[None]:
    """A transaction begun at this database's writer turn (the turn first: waiting for it inside the transaction
    could only stall, since the database lock may already be ours)."""
    with turn(using), transaction.atomic(using=using):
        yield


@contextmanager
def held(path: str) -> Iterator[None]:
    """Hold the exclusive file lock ``path`` for the block, waiting (in the kernel) for it when taken."""
    fd = _descriptor(path)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
