"""The intake's writer turns: a file lock beside a SQLite database that queues its writers in the kernel."""

from __future__ import annotations

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
    waiter = _enters(path, second)
    time.sleep(0.2)
    assert second == [], "the second thread entered while the first held the turn"
    let_go = time.monotonic()
    release.set()
    holder.join(5)
    waiter.join(5)
    assert second and second[0] >= let_go
    # Woken by the kernel, not by a polling interval.
    assert second[0] - let_go < 0.1


def test_the_turn_is_let_go_when_the_block_fails(tmp_path):
    path = str(tmp_path / "db.sqlite3-writer")
    with pytest.raises(RuntimeError), writer_lock.held(path):
        raise RuntimeError("the transaction failed")
    entered: list[float] = []
    _enters(path, entered).join(5)
    assert entered, "the turn stayed taken after the block raised"


def test_another_process_waits_and_a_killed_holder_frees_the_turn(tmp_path):
    path = str(tmp_path / "db.sqlite3-writer")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        entered: list[float] = []
        waiter = _enters(path, entered)
        time.sleep(0.2)
        assert entered == [], "a thread entered while another process held the turn"
        holder.kill()
        holder.wait(5)
        waiter.join(5)
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
        if pid == 0:  # the child: its turn must wait for the parent's
            os.close(read)
            started = time.monotonic()
            with writer_lock.held(path):
                waited = time.monotonic() - started
            os.write(write, f"{waited:.3f}".encode())
            os._exit(0)
        time.sleep(0.3)
    os.close(write)
    waited = float(os.read(read, 64).decode())
    os.waitpid(pid, 0)
    os.close(read)
    assert waited >= 0.2, "the child took the turn its parent held"


@pytest.mark.django_db(transaction=True)
def test_turns_are_taken_on_sqlite_only_and_never_inside_a_transaction():
    path = writer_lock.lock_path()
    if connection.vendor != "sqlite":
        # PostgreSQL has row locks and SKIP LOCKED: nothing to queue on.
        assert path is None
        with writer_lock.turn():
            return
    assert path == f"{connection.settings_dict['NAME']}-writer"
    entered: list[float] = []
    with writer_lock.turn():
        thread = _enters(path, entered)
        time.sleep(0.2)
        assert entered == [], "the turn was not held"
    thread.join(5)
    assert entered
    # Inside a transaction the database lock may already be ours: waiting for a turn then could only stall.
    entered.clear()
    with transaction.atomic(), writer_lock.turn():
        _enters(path, entered).join(5)
        assert entered, "a turn was taken inside a transaction"
