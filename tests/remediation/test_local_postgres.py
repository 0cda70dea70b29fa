"""PostgreSQL actions against the real test server (GRACE_PG_URL, exported by scripts/with-services.sh)."""

import json
import os
import threading
import uuid
from collections.abc import Callable

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from rest_framework.exceptions import ValidationError

from remediation.actions import load_all
from remediation.actions.base import ActionRefused, ActionUnavailable, CannotObserve, TransientActionError
from remediation.actions.local.postgres import redact_sql
from tests.support.runs import wait_for as poll_until

REGISTRY = load_all()
TERMINATE = REGISTRY.get("postgres.terminate_blockers")
CANCEL = REGISTRY.get("postgres.cancel_long_queries")
VACUUM = REGISTRY.get("postgres.vacuum_analyze")


@pytest.fixture(scope="module")
def server():
    """A database and an ordinary (non-superuser) application role of their own on the test server."""
    url = os.environ.get("GRACE_PG_URL")
    if not url:
        pytest.fail("GRACE_PG_URL is not set: run the tests through scripts/with-services.sh")
    url = make_conninfo(url, dbname="postgres")  # the maintenance database every cluster has
    suffix = uuid.uuid4().hex[:8]
    dbname, role = f"grace_local_{suffix}", f"grace_app_{suffix}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'CREATE DATABASE "{dbname}" OWNER "{role}"')
    superuser_dsn = make_conninfo(url, dbname=dbname)
    app_dsn = make_conninfo(url, dbname=dbname, user=role)
    with psycopg.connect(app_dsn, autocommit=True) as app:
        app.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
        app.execute("INSERT INTO accounts VALUES (1, 100), (2, 200)")
    # The least privilege docs/actions-local.md once named: may signal, may not read others' activity.
    signaller = f"grace_sig_{suffix}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{signaller}" LOGIN IN ROLE pg_signal_backend')
    yield {
        "superuser": superuser_dsn,
        "app": app_dsn,
        "signal_only": make_conninfo(url, dbname=dbname, user=signaller),
        "signaller": signaller,
        "admin": url,
    }
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
        admin.execute(f'DROP ROLE "{role}"')
        admin.execute(f'DROP ROLE "{signaller}"')


@pytest.fixture(autouse=True)
def target(settings, server):
    # GRACE connects as the superuser (it must be able to signal others); the applications do not.
    settings.GRACE_POSTGRES_TARGETS = json.dumps({"orders": server["superuser"]})
    settings.GRACE_PG_APPLICATION_NAME = "grace"
    return "orders"


def session(dsn: str, name: str) -> psycopg.Connection:
    return psycopg.connect(dsn, application_name=name, autocommit=False)


def poll(check: Callable[[], object], timeout: float = 15.0):
    return poll_until(check, timeout=timeout, interval=0.01)


class Blocked:
    """A session that updates a locked row in a thread until the lock is released."""

    def __init__(self, dsn: str, name: str = "victim"):
        self.conn = session(dsn, name)
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
            self.conn.commit()
        except psycopg.Error as exc:
            self.error = exc

    def finish(self) -> None:
        self.thread.join(20)
        self.conn.close()


def blocked_for(target: str, seconds: int) -> dict:
    def check():
        facts = TERMINATE.observe({"target": target, "min_blocked_seconds": seconds})
        return facts if facts["sessions_blocked_over_threshold"] >= 1 else None

    return poll(check)


def balance(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT balance FROM accounts WHERE id = 1").fetchone()[0]


def test_it_terminates_the_session_holding_the_lock_and_the_blocked_statement_completes(server, target):
    start = balance(server["app"])
    holder = session(server["app"], "batch-job")
    holder.execute("SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
    holder_pid = holder.info.backend_pid
    victim = Blocked(server["app"])
    try:
        facts = blocked_for(target, 1)
        assert facts["blocked_sessions"] == 1
        assert facts["blocking_pids"] == [holder_pid]
        assert facts["longest_block_seconds"] >= 1

        result = TERMINATE.execute(TERMINATE.validate({"target": target, "min_blocked_seconds": 1}))

        assert [s["pid"] for s in result["terminated"]] == [holder_pid]
        assert result["terminated"][0]["application_name"] == "batch-job"
        victim.thread.join(20)
        assert not victim.thread.is_alive()
        assert victim.error is None
        assert balance(server["app"]) == start + 1
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")
        assert TERMINATE.observe({"target": target})["blocked_sessions"] == 0
    finally:
        victim.finish()
        holder.close()


def test_only_the_head_of_a_lock_queue_is_terminated_and_everyone_behind_it_completes(server, target):
    start = balance(server["app"])
    holder = session(server["app"], "batch-job")
    holder.execute("SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
    first = Blocked(server["app"], "first-in-line")
    poll(lambda: TERMINATE.observe({"target": target})["blocked_sessions"] == 1)
    second = Blocked(server["app"], "second-in-line")  # waits for the holder and for the first
    try:
        poll(
            lambda: (
                TERMINATE.observe({"target": target, "min_blocked_seconds": 1})["sessions_blocked_over_threshold"] == 2
            )
        )

        result = TERMINATE.execute(TERMINATE.validate({"target": target, "min_blocked_seconds": 1}))

        assert [s["pid"] for s in result["terminated"]] == [holder.info.backend_pid]
        assert {s["application_name"]: s["reason"] for s in result["skipped"]} == {
            "first-in-line": "itself waiting on a lock (not the head of the queue)"
        }
        for victim in (first, second):
            victim.thread.join(20)
            assert victim.error is None
        assert balance(server["app"]) == start + 2
    finally:
        first.finish()
        second.finish()
        holder.close()


def test_sessions_blocking_for_less_than_the_threshold_are_left_alone(server, target):
    holder = session(server["app"], "short-job")
    holder.execute("SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
    victim = Blocked(server["app"])
    try:
        poll(lambda: TERMINATE.observe({"target": target})["blocked_sessions"] == 1)

        result = TERMINATE.execute(TERMINATE.validate({"target": target, "min_blocked_seconds": 3600}))

        assert result["terminated"] == []
        assert holder.execute("SELECT 1").fetchone() == (1,)
    finally:
        holder.rollback()
        victim.finish()
        holder.close()


@pytest.mark.parametrize(
    "holder_kind",
    ["superuser", "grace"],
    ids=["a-superuser-session", "a-session-of-grace-itself"],
)
def test_protected_blockers_are_never_terminated(server, target, holder_kind):
    dsn = server["superuser"] if holder_kind == "superuser" else server["app"]
    holder = session(dsn, "admin-console" if holder_kind == "superuser" else "grace")
    holder.execute("SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
    victim = Blocked(server["app"])
    try:
        blocked_for(target, 1)

        result = TERMINATE.execute(TERMINATE.validate({"target": target, "min_blocked_seconds": 1}))

        assert result["terminated"] == []
        assert [s["pid"] for s in result["skipped"]] == [holder.info.backend_pid]
        assert result["skipped"][0]["reason"].startswith("protected")
        assert holder.execute("SELECT 1").fetchone() == (1,)
    finally:
        holder.rollback()
        victim.finish()
        holder.close()


def test_it_cancels_long_queries_and_the_session_survives(server, target):
    worker = session(server["app"], "report")
    worker.autocommit = True
    errors = []

    def long_query():
        try:
            worker.execute("SELECT pg_sleep(60)")
        except psycopg.errors.QueryCanceled as exc:
            errors.append(exc)

    thread = threading.Thread(target=long_query, daemon=True)
    thread.start()
    try:
        poll(lambda: CANCEL.observe({"target": target, "min_seconds": 1})["long_queries"] >= 1)

        result = CANCEL.execute(CANCEL.validate({"target": target, "min_seconds": 1}))

        assert [s["pid"] for s in result["cancelled"]] == [worker.info.backend_pid]
        thread.join(20)
        assert len(errors) == 1
        assert worker.execute("SELECT 1").fetchone() == (1,)
    finally:
        thread.join(20)
        worker.close()


def test_vacuum_analyze_cleans_dead_tuples_of_a_table(server, target):
    with psycopg.connect(server["app"], autocommit=True) as app:
        app.execute("CREATE TABLE IF NOT EXISTS events (id serial PRIMARY KEY, body text)")
        app.execute("INSERT INTO events (body) SELECT 'x' FROM generate_series(1, 2000)")
        app.execute("DELETE FROM events WHERE id % 2 = 0")

    result = VACUUM.execute(VACUUM.validate({"target": target, "table": "public.events"}))

    assert result == {"vacuumed": "public.events"}
    facts = poll(
        lambda: (f := VACUUM.observe({"target": target, "table": "public.events"}))["last_vacuum"] is not None and f
    )
    assert facts["table_exists"] is True
    assert facts["last_analyze"] is not None


def test_a_table_name_that_is_not_an_identifier_is_a_field_error(target):
    with pytest.raises(ValidationError) as exc:
        VACUUM.validate({"target": target, "table": "events; DROP TABLE accounts"})

    assert "table" in exc.value.detail


def test_a_missing_table_is_refused(target):
    with pytest.raises(ActionRefused, match="no table"):
        VACUUM.execute(VACUUM.validate({"target": target, "table": "nope"}))


def test_a_target_that_is_not_configured_is_refused(target):
    with pytest.raises(ActionRefused, match="not configured"):
        TERMINATE.observe({"target": "billing"})


def test_no_configured_targets_makes_the_family_unavailable(settings):
    settings.GRACE_POSTGRES_TARGETS = ""

    with pytest.raises(ActionUnavailable, match="GRACE_POSTGRES_TARGETS"):
        TERMINATE.observe({"target": "orders"})


def test_targets_can_come_from_a_file(settings, server, tmp_path):
    path = tmp_path / "targets.json"
    path.write_text(json.dumps({"from-file": server["superuser"]}))
    settings.GRACE_POSTGRES_TARGETS = str(path)

    assert TERMINATE.observe({"target": "from-file"})["blocked_sessions"] == 0

    path.write_text("{not json")
    with pytest.raises(ActionUnavailable, match="not valid JSON"):
        TERMINATE.observe({"target": "from-file"})


def test_an_unreachable_server_is_a_transient_error(settings):
    settings.GRACE_POSTGRES_TARGETS = json.dumps({"down": "postgresql://grace@127.0.0.1:1/none"})
    settings.GRACE_PG_CONNECT_TIMEOUT = 1

    with pytest.raises(TransientActionError, match="cannot connect"):
        TERMINATE.observe({"target": "down"})


def test_every_connection_carries_grace_application_name_and_timeouts(settings, target):
    from remediation.actions.local import postgres

    settings.GRACE_PG_STATEMENT_TIMEOUT_MS = 1234
    with postgres.connect(target) as conn:
        name = conn.execute("SHOW application_name").fetchone()[0]
        timeout = conn.execute("SHOW statement_timeout").fetchone()[0]
    assert name == "grace"
    assert timeout == "1234ms"


@pytest.mark.parametrize(
    ("statement", "kept"),
    [
        (
            "SELECT * FROM accounts WHERE id = 1 AND balance > 42.5 AND 'hunter2' <> E'x\\'y' FOR UPDATE",
            "SELECT * FROM accounts WHERE id = ? AND balance > ? AND ? <> ? FOR UPDATE",
        ),
        (  # PostgreSQL itself cuts the text (track_activity_query_size) in the middle of the literal
            "SELECT * FROM accounts WHERE id = 1 /* by ops */ AND $q$" + "hunter2 " * 200 + "$q$ <> '' FOR UPDATE",
            "SELECT * FROM accounts WHERE id = ? AND ?",
        ),
    ],
    ids=["literals", "a-literal-cut-by-postgresql"],
)
def test_the_sql_of_a_terminated_session_is_kept_truncated_and_without_literals(server, target, statement, kept):
    holder = session(server["app"], "batch-job")
    holder.execute(statement)
    victim = Blocked(server["app"])
    try:
        blocked_for(target, 1)

        result = TERMINATE.execute(TERMINATE.validate({"target": target, "min_blocked_seconds": 1}))

        (terminated,) = result["terminated"]
        assert terminated["query"] == kept
        assert "hunter2" not in json.dumps(result) and "42" not in terminated["query"]
    finally:
        victim.finish()
        holder.close()


def test_the_sql_of_a_cancelled_query_is_kept_without_literals(server, target):
    worker = session(server["app"], "report")
    worker.autocommit = True
    thread = threading.Thread(target=lambda: _swallow(worker, "SELECT pg_sleep(60), 'hunter2'"), daemon=True)
    thread.start()
    try:
        poll(lambda: CANCEL.observe({"target": target, "min_seconds": 1})["long_queries"] >= 1)

        result = CANCEL.execute(CANCEL.validate({"target": target, "min_seconds": 1}))

        assert [s["query"] for s in result["cancelled"]] == ["SELECT pg_sleep(?), ?"]
    finally:
        thread.join(20)
        worker.close()


def _swallow(conn: psycopg.Connection, statement: str) -> None:
    try:
        conn.execute(statement)
    except psycopg.errors.QueryCanceled:
        pass


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("UPDATE t SET a = $$x$$, b = $f$ y $$ z $f$ WHERE c = $1 -- note", "UPDATE t SET a = ?, b = ? WHERE c = $1"),
        ("SELECT 'C:\\', 'secret'", "SELECT ?, ?"),  # standard_conforming_strings: no escape in '...'
        ("SELECT 'it''s', \"col 1\", x1, 0x1F, .5e3, B'101'", 'SELECT ?, "col 1", x1, ?, ?, ?'),
        ("INSERT INTO t VALUES ('never closed secret", "INSERT INTO t VALUES (?"),
        ("SELECT 1 /* never closed secret", "SELECT ?"),
        ("<insufficient privilege>", "<insufficient privilege>"),
    ],
)
def test_literals_and_comments_are_redacted_even_when_cut_off(text, redacted):
    assert redact_sql(text) == redacted


def test_long_sql_text_is_cut_to_two_hundred_characters():
    assert len(redact_sql("SELECT " + ", ".join(f"column_{i}" for i in range(100)))) == 200


def test_with_only_pg_signal_backend_the_session_actions_cannot_observe_and_change_nothing(settings, server):
    settings.GRACE_POSTGRES_TARGETS = json.dumps({"orders": server["superuser"], "limited": server["signal_only"]})
    holder = session(server["app"], "batch-job")
    holder.execute("SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
    victim = Blocked(server["app"])
    try:
        blocked_for("orders", 1)
        params = {"target": "limited", "min_blocked_seconds": 1, "min_seconds": 1}

        for call in (TERMINATE.observe, TERMINATE.execute, CANCEL.observe, CANCEL.execute):
            with pytest.raises(CannotObserve, match="pg_read_all_stats") as exc:
                call(TERMINATE.validate(params) if call is TERMINATE.execute else params)
            assert isinstance(exc.value, ActionUnavailable)  # the pipeline blocks the run with the reason
        vacuum_facts = VACUUM.observe({"target": "limited", "table": "accounts"})

        assert holder.execute("SELECT 1").fetchone() == (1,)  # the blocker was not touched...
        assert victim.thread.is_alive()  # ...and the lock is still held
        assert vacuum_facts["table_exists"] is True
        assert "blocked_sessions" not in vacuum_facts and "pg_read_all_stats" in vacuum_facts["sessions_hidden"]

        # The documented privileges, pg_signal_backend and pg_read_all_stats, are enough.
        with psycopg.connect(server["admin"], autocommit=True) as admin:
            admin.execute(f'GRANT pg_read_all_stats TO "{server["signaller"]}"')
        result = TERMINATE.execute(TERMINATE.validate(params))
        assert [s["pid"] for s in result["terminated"]] == [holder.info.backend_pid]
        victim.thread.join(20)
        assert victim.error is None
    finally:
        with psycopg.connect(server["admin"], autocommit=True) as admin:
            admin.execute(f'REVOKE pg_read_all_stats FROM "{server["signaller"]}"')
        victim.finish()
        holder.close()
