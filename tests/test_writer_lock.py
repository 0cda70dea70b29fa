"""The intake's writer turns: a file lock beside a SQLite database that queues its writers in the kernel."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection, transaction

from grace_site import writer_lock

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def _taken(path: str) -> bool:
    """Whether someone holds the turn: asked from a descriptor of its own, without waiting."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock if it was taken here
    return False


def _enters(path: str, entered: list[float], release: threading.Event | None = None) -> threading.Thread:
    def run() -> None:
        with writer_lock.held(path):
            entered.append(time.monotonic())
            if release is not None:
                release.wait(10)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_second_thread_waits_for_the_turn_and_gets_it_when_the_first_lets_go(tmp_path):
    path = str(tmp_path / "db.sqlite3-writer")
    first, second = [], []
    release = threading.Event()
    holder = _enters(path, first, release)
    while not first:
        time.sleep(0.001)
    assert _taken(path)
    waiter = _enters(path, second)
    let_go = time.monotonic()
    assert second == [], "the second thread entered while the first held the turn"
    release.set()
    holder.join(5)
    waiter.join(5)
    assert second and second[0] >= let_go
    # Woken by the kernel, not by a polling interval.
    assert second[0] - let_go < 0.1
    assert not _taken(path)


def test_the_turn_is_let_go_when_the_block_fails(tmp_path):
    path = str(tmp_path / "db.sqlite3-writer")
    with pytest.raises(RuntimeError), writer_lock.held(path):
        assert _taken(path)
        raise RuntimeError("the transaction failed")
    assert not _taken(path), "the turn stayed taken after the block raised"


def test_another_process_waits_and_a_killed_holder_frees_the_turn(tmp_path):
    path = str(tmp_path / "db.sqlite3-writer")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _taken(path), "another process's turn is not seen here"
        holder.kill()
        holder.wait(5)
        entered: list[float] = []
        _enters(path, entered).join(5)
        assert entered, "the turn of a killed process was not freed"
    finally:
        holder.kill()
        holder.wait(5)


def test_a_forked_child_opens_its_own_lock(tmp_path):
    """A Celery pool process forked from a parent that took a turn must still queue against that parent."""
    path = str(tmp_path / "db.sqlite3-writer")
    with writer_lock.held(path):
        pass  # the parent's descriptor is now open and cached
    read, write = os.pipe()
    with writer_lock.held(path):
        pid = os.fork()
        if pid == 0:  # the child asks for the turn its parent holds, through the module's own descriptor
            os.close(read)
            try:
                fcntl.flock(writer_lock._descriptor(path), fcntl.LOCK_EX | fcntl.LOCK_NB)
                answer = b"granted"
            except BlockingIOError:
                answer = b"waits"
            os.write(write, answer)
            os._exit(0)
        os.close(write)
        answer = os.read(read, 16)
        os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"waits", "the child took the turn its parent held"


@pytest.mark.django_db(transaction=True)
def test_turns_are_taken_on_sqlite_only_and_never_inside_a_transaction():
    path = writer_lock.lock_path()
    if connection.vendor != "sqlite":
        # PostgreSQL has row locks and SKIP LOCKED: nothing to queue on.
        assert path is None
        with writer_lock.turn():
            return
    assert path == f"{connection.settings_dict['NAME']}-writer"
    with writer_lock.turn():
        assert _taken(path), "the turn was not held"
    assert not _taken(path)
    with writer_lock.atomic():
        assert _taken(path) and connection.in_atomic_block
    # Inside a transaction the database lock may already be ours: waiting for a turn then could only stall.
    with transaction.atomic(), writer_lock.turn():
        assert not _taken(path), "a turn was taken inside a transaction"
