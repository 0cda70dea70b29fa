"""database_locked on SQLite: switching a rollback-journal database to WAL mode, where readers stop blocking
the writer; refused (naming who holds the file) when it is already in WAL mode."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

import pytest

from incidents import defaults as incident_defaults
from incidents.services import Signal, ingest
from remediation import defaults
from remediation.actions import load_all
from remediation.actions.base import ActionRefused
from remediation.choices import RunStatus
from tests.support import inventory
from tests.support.runs import wait_for_run

ENABLE_WAL = load_all().get("sqlite.enable_wal")


@pytest.fixture
def managed(settings, tmp_path):
    root = tmp_path / "managed"
    root.mkdir()
    settings.GRACE_ALLOWED_ROOTS = [str(root)]
    settings.GRACE_SQLITE_BUSY_TIMEOUT_MS = 500
    return root


def journal_db(path, mode: str = "delete"):
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA journal_mode={mode}")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT)")
        conn.executemany("INSERT INTO orders (note) VALUES (?)", [(f"n{i}",) for i in range(100)])
    return path


def commit_while_reading(path) -> str:
    """A reader holds a read transaction while a writer commits: "ok", or the writer's error."""
    with (
        closing(sqlite3.connect(path, isolation_level=None)) as reader,
        closing(sqlite3.connect(path, isolation_level=None, timeout=0.2)) as writer,
    ):
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM orders").fetchone()
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("INSERT INTO orders (note) VALUES ('late')")
            writer.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            writer.execute("ROLLBACK")
            return str(exc)
        finally:
            reader.execute("COMMIT")
    return "ok"


def test_wal_mode_lets_a_writer_commit_while_a_reader_reads_and_rollback_restores_the_journal(managed):
    db = journal_db(managed / "orders.sqlite3")
    params = ENABLE_WAL.validate({"path": str(db)})
    assert commit_while_reading(db) == "database is locked"  # rollback journal: the reader blocks the commit

    state = ENABLE_WAL.snapshot(params, managed)
    result = ENABLE_WAL.execute(params)

    assert state == {"path": str(db), "journal_mode": "delete"}
    assert result == {"journal_mode_before": "delete", "journal_mode": "wal"}
    assert commit_while_reading(db) == "ok"
    facts = ENABLE_WAL.observe(params)
    assert (facts["journal_mode"], facts["busy"], facts["integrity"]) == ("wal", False, "ok")
    restored = ENABLE_WAL.rollback(params, state, managed)
    assert restored["journal_mode"] == "delete" and restored["verified"]
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 101


def test_a_database_already_in_wal_mode_is_refused_naming_the_processes_holding_it(managed):
    db = journal_db(managed / "busy.sqlite3", mode="wal")
    holder = sqlite3.connect(db)
    holder.execute("SELECT count(*) FROM orders").fetchone()
    params = ENABLE_WAL.validate({"path": str(db)})
    try:
        with pytest.raises(ActionRefused) as excinfo:
            ENABLE_WAL.snapshot(params, managed)
    finally:
        holder.close()

    assert "already in WAL mode" in str(excinfo.value)
    assert f"(pid {os.getpid()})" in str(excinfo.value)


@pytest.mark.django_db(transaction=True)
def test_a_locked_sqlite_database_is_switched_to_wal_by_the_shipped_playbook(celery_worker, allowed_root):
    incident_defaults.install()  # the shipped rule: "database is locked" in a message is database_locked
    defaults.install()
    db = journal_db(allowed_root / "shop.sqlite3")
    inventory.resource("shop", "sqlite", db, name="db")

    incident = ingest(
        Signal(
            source="api",
            title="shop: writes fail",
            service="shop",
            message="sqlite3.OperationalError: database is locked",
        )
    ).incident
    run = wait_for_run(incident.pk)

    assert incident.diagnosis_code == "database_locked"
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert run.playbook.name == "sqlite-locked-wal-mode"
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 100
    assert commit_while_reading(db) == "ok"
