"""SQLite actions against real database files in WAL mode."""

import os
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from remediation.actions import load_all
from remediation.actions.base import ActionError, ActionRefused, TransientActionError

REGISTRY = load_all()
CHECKPOINT = REGISTRY.get("sqlite.checkpoint")
INTEGRITY = REGISTRY.get("sqlite.integrity_check")
VACUUM = REGISTRY.get("sqlite.vacuum")
ANALYZE = REGISTRY.get("sqlite.analyze")
MIB = 1024 * 1024


@pytest.fixture
def managed(settings, tmp_path):
    root = tmp_path / "managed"
    root.mkdir()
    settings.GRACE_ALLOWED_ROOTS = [str(root)]
    settings.GRACE_SQLITE_BUSY_TIMEOUT_MS = 2000
    return root


@pytest.fixture
def orders_db(managed):
    """A WAL database with an application connection that stays open (as a real app's would)."""
    path = managed / "orders.sqlite3"
    app = sqlite3.connect(path, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, body BLOB, note TEXT)")
    app.execute("CREATE INDEX orders_note ON orders(note)")
    app.execute("BEGIN")
    for i in range(200):
        app.execute("INSERT INTO orders (body, note) VALUES (randomblob(500), ?)", [f"n{i % 7}"])
    app.execute("COMMIT")
    yield path, app
    app.close()


def dump(path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


def grow_wal(app: sqlite3.Connection, path, rows: int = 3000) -> None:
    """Write while a reader holds an old snapshot, so no checkpoint can reset the WAL."""
    with closing(sqlite3.connect(path, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM orders").fetchone()
        app.execute("BEGIN")
        for _ in range(rows):
            app.execute("INSERT INTO orders (body, note) VALUES (randomblob(1000), 'wal')")
        app.execute("COMMIT")
        reader.execute("COMMIT")


def test_checkpoint_truncates_a_bloated_wal_and_keeps_every_row(orders_db):
    path, app = orders_db
    grow_wal(app, path)
    before = CHECKPOINT.observe({"path": str(path)})
    assert before["wal_bytes"] > 2 * MIB

    result = CHECKPOINT.execute(CHECKPOINT.validate({"path": str(path)}))

    after = CHECKPOINT.observe({"path": str(path)})
    assert result["checkpointed"] is True
    assert result["wal_bytes_before"] == before["wal_bytes"]
    assert after["wal_bytes"] == 0
    assert after["db_bytes"] > before["db_bytes"]
    # The -wal and -shm files are never deleted, only truncated by SQLite itself.
    assert os.path.exists(f"{path}-wal") and os.path.exists(f"{path}-shm")
    assert app.execute("SELECT count(*) FROM orders").fetchone()[0] == 3200


def test_checkpoint_blocked_by_a_reader_is_a_transient_error(settings, orders_db):
    path, app = orders_db
    settings.GRACE_SQLITE_BUSY_TIMEOUT_MS = 50
    app.execute("INSERT INTO orders (note) VALUES ('x')")
    with closing(sqlite3.connect(path, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM orders").fetchone()
        app.execute("INSERT INTO orders (note) VALUES ('y')")

        with pytest.raises(TransientActionError, match="readers are still using the WAL"):
            CHECKPOINT.execute({"path": str(path)})
        reader.execute("COMMIT")


def test_observe_reports_the_database_facts(orders_db):
    path, _ = orders_db

    facts = CHECKPOINT.observe({"path": str(path)})

    assert facts["exists"] is True
    assert facts["integrity"] == "ok"
    assert facts["busy"] is False
    assert facts["journal_mode"] == "wal"
    assert facts["page_count"] > 0
    assert facts["freelist_count"] == 0
    assert facts["db_bytes"] == os.path.getsize(path)


def test_observe_reports_busy_while_another_connection_holds_the_write_lock(orders_db):
    path, app = orders_db
    app.execute("BEGIN IMMEDIATE")
    try:
        assert CHECKPOINT.observe({"path": str(path)})["busy"] is True
    finally:
        app.execute("ROLLBACK")
    assert CHECKPOINT.observe({"path": str(path)})["busy"] is False


def test_observe_does_not_checkpoint_the_wal_left_by_a_crashed_writer(managed):
    path = managed / "crashed.sqlite3"
    writer = (
        "import os, signal, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute('CREATE TABLE t (x)'); c.execute('INSERT INTO t VALUES (randomblob(100000))')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(path)], check=False, timeout=30)
    wal = os.path.getsize(f"{path}-wal")
    assert wal > 100000

    facts = CHECKPOINT.observe({"path": str(path)})

    # Nobody else has the database open: a careless observer would be the last connection to close
    # and would checkpoint and remove the WAL. Observing must change nothing.
    assert facts["wal_bytes"] == wal
    assert os.path.getsize(f"{path}-wal") == wal
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT length(x) FROM t").fetchone()[0] == 100000


def test_observe_of_a_missing_database_reports_it_missing_without_creating_it(managed):
    path = managed / "missing.sqlite3"

    facts = CHECKPOINT.observe({"path": str(path)})

    assert facts["exists"] is False
    assert facts["wal_bytes"] is None
    assert not path.exists()


def test_a_database_outside_the_allowed_roots_is_refused(tmp_path, managed):
    outside = tmp_path / "elsewhere.sqlite3"
    sqlite3.connect(outside).close()
    link = managed / "link.sqlite3"
    link.symlink_to(outside)

    for action in (CHECKPOINT, INTEGRITY, VACUUM, ANALYZE):
        with pytest.raises(ActionRefused, match="outside the allowed roots"):
            action.execute({"path": str(outside)})
        with pytest.raises(ActionRefused, match="outside the allowed roots"):
            action.execute({"path": str(link)})
    with pytest.raises(ActionRefused):
        CHECKPOINT.observe({"path": str(outside)})


def test_snapshot_and_rollback_restore_the_same_logical_content_through_the_backup_api(orders_db, tmp_path):
    path, app = orders_db
    grow_wal(app, path, rows=50)  # part of the content lives only in the WAL
    before = dump(path)
    snapshot_dir = tmp_path / "snap"
    snapshot_dir.mkdir()
    params = CHECKPOINT.validate({"path": str(path)})

    state = CHECKPOINT.snapshot(params, snapshot_dir)
    files_after_snapshot = sorted(p.name for p in snapshot_dir.iterdir())
    app.execute("DELETE FROM orders WHERE id % 2 = 0")
    app.execute("CREATE TABLE junk (x)")
    app.execute("UPDATE orders SET note = 'changed'")
    assert dump(path) != before
    result = CHECKPOINT.rollback(params, state, snapshot_dir)

    assert dump(path) == before
    assert result["journal_mode"] == "wal"
    assert app.execute("SELECT count(*) FROM orders").fetchone()[0] == 250
    assert files_after_snapshot == ["database.sqlite3"]
    # Reading the snapshot during rollback left no -wal/-shm beside it (the manifest stays valid).
    assert sorted(p.name for p in snapshot_dir.iterdir()) == ["database.sqlite3"]


def test_rollback_refuses_a_snapshot_of_another_database(orders_db, managed, tmp_path):
    path, _ = orders_db
    other = managed / "other.sqlite3"
    sqlite3.connect(other).close()
    state = CHECKPOINT.snapshot({"path": str(path)}, tmp_path)

    with pytest.raises(ActionRefused, match="snapshot is of"):
        CHECKPOINT.rollback({"path": str(other)}, state, tmp_path)


def test_integrity_check_reports_ok_and_reports_corruption(orders_db, managed):
    path, app = orders_db
    assert INTEGRITY.execute({"path": str(path)}) == {"integrity": "ok", "ok": True}

    broken = managed / "broken.sqlite3"
    with closing(sqlite3.connect(broken)) as conn:
        conn.execute("CREATE TABLE t (x TEXT, y TEXT)")
        conn.execute("CREATE INDEX t_x ON t(x)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(f"x-{i}", f"y-{i}") for i in range(200)])
        conn.commit()
        # Make the index disagree with its table, as a torn write would.
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX t_x ON t(y)' WHERE name = 't_x'")
        conn.commit()

    result = INTEGRITY.execute({"path": str(broken)})

    assert result["ok"] is False
    assert result["integrity"] != "ok"


def test_vacuum_reclaims_free_pages(orders_db):
    path, app = orders_db
    app.execute("DELETE FROM orders WHERE id > 20")
    app.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert VACUUM.observe({"path": str(path)})["freelist_count"] > 0

    result = VACUUM.execute({"path": str(path)})

    assert result["freelist_count_after"] == 0
    assert result["page_count_after"] < result["page_count_before"]
    assert VACUUM.observe({"path": str(path)})["freelist_count"] == 0
    assert app.execute("SELECT count(*) FROM orders").fetchone()[0] == 20


def test_analyze_writes_planner_statistics(orders_db):
    path, app = orders_db

    result = ANALYZE.execute({"path": str(path)})

    assert result["tables_with_statistics"] >= 1
    assert app.execute("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'orders'").fetchone()[0] >= 1


def test_a_file_that_is_not_a_database_is_a_clear_error(managed):
    path = managed / "notes.txt"
    path.write_bytes(b"definitely not sqlite" * 100)

    with pytest.raises(ActionError, match="not a database"):
        CHECKPOINT.execute({"path": str(path)})
