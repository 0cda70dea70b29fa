"""PostgreSQL remedies: terminate lock blockers, cancel long queries, VACUUM ANALYZE.

Targets are named in ``GRACE_POSTGRES_TARGETS`` (a JSON object name -> DSN, or the
path of a file holding one); a step names a target, never a DSN. Every connection
sets ``connect_timeout``, ``statement_timeout`` and GRACE's ``application_name``.
Sessions of superusers, of replication (walsenders or roles with REPLICATION), of
GRACE itself (its application names and this connection's own backend pid) and
non-client backends are never signalled.

Observation must be whole: without ``pg_read_all_stats`` (or superuser) PostgreSQL hides
the state, wait and query of other roles' sessions, so "nothing is blocked" could be read
off sessions GRACE cannot see. The session actions raise ``CannotObserve`` when any
session of the target database is hidden from them, instead of acting on (or verifying
against) part of the picture. The query text of a signalled session is kept truncated,
its string and numeric literals and comments replaced (``redact_sql``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from django.conf import settings
from psycopg import sql
from rest_framework import serializers

from remediation.actions.base import (
    Action,
    ActionError,
    ActionRefused,
    ActionUnavailable,
    CannotObserve,
    TransientActionError,
    registry,
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


def targets() -> dict[str, str]:
    raw = settings.GRACE_POSTGRES_TARGETS.strip()
    if not raw:
        raise ActionUnavailable("postgres: no targets configured (set GRACE_POSTGRES_TARGETS)")
    source = "GRACE_POSTGRES_TARGETS"
    if not raw.startswith("{"):
        source = f"GRACE_POSTGRES_TARGETS file {raw}"
        try:
            raw = Path(raw).read_text()
        except OSError as exc:
            raise ActionUnavailable(f"postgres: cannot read {source}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ActionUnavailable(f"postgres: {source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ActionUnavailable(f"postgres: {source} must be a JSON object of name -> DSN strings")
    return data


def protected_applications() -> list[str]:
    return [settings.GRACE_PG_APPLICATION_NAME, *settings.GRACE_PG_PROTECTED_APPLICATIONS]


@contextmanager
def connect(target: str, *, statement_timeout_ms: int | None = None) -> Iterator[psycopg.Connection]:
    configured = targets()
    if target not in configured:
        raise ActionRefused(f"postgres target {target!r} is not configured (known: {', '.join(sorted(configured))})")
    timeout = statement_timeout_ms or settings.GRACE_PG_STATEMENT_TIMEOUT_MS
    try:
        conn = psycopg.connect(
            configured[target],
            autocommit=True,
            connect_timeout=settings.GRACE_PG_CONNECT_TIMEOUT,
            application_name=settings.GRACE_PG_APPLICATION_NAME,
            options=f"-c statement_timeout={int(timeout)} -c lock_timeout={int(timeout)}",
        )
    except psycopg.OperationalError as exc:
        raise TransientActionError(f"postgres {target}: cannot connect: {str(exc).strip()}") from exc
    try:
        yield conn
    except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable, psycopg.OperationalError) as exc:
        raise TransientActionError(f"postgres {target}: {str(exc).strip()}") from exc
    except psycopg.Error as exc:
        raise ActionError(f"postgres {target}: {str(exc).strip()}") from exc
    finally:
        conn.close()


class TargetParams(serializers.Serializer):
    target = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,100}$", help_text="A name from GRACE_POSTGRES_TARGETS.")


class BlockerParams(TargetParams):
    min_blocked_seconds = serializers.IntegerField(min_value=1, max_value=86400, default=30)
    max_sessions = serializers.IntegerField(min_value=1, max_value=100, default=5)


class LongQueryParams(TargetParams):
    min_seconds = serializers.IntegerField(min_value=1, max_value=7 * 86400, default=300)
    max_sessions = serializers.IntegerField(min_value=1, max_value=100, default=5)


class VacuumParams(TargetParams):
    table = serializers.RegexField(_IDENT, required=False, help_text="table or schema.table; default: the database")


# Sessions of this database waiting on a lock, with how long and who blocks them.
_BLOCKED = """
SELECT w.pid,
       EXTRACT(EPOCH FROM clock_timestamp() - COALESCE(
           (SELECT min(l.waitstart) FROM pg_locks l WHERE l.pid = w.pid AND NOT l.granted), w.query_start))::float8,
       pg_blocking_pids(w.pid)
  FROM pg_stat_activity w
 WHERE w.datname = current_database() AND w.wait_event_type = 'Lock' AND w.pid <> pg_backend_pid()
"""

# Whether a session may be signalled: client backends only, never superusers, replication or GRACE.
_SIGNALLABLE = sql.SQL("""
    a.backend_type = 'client backend'
AND a.pid <> pg_backend_pid()
AND NOT COALESCE(r.rolsuper, true)
AND NOT COALESCE(r.rolreplication, true)
AND NOT (COALESCE(a.application_name, '') = ANY(%(protected)s))
""")

_SESSIONS = sql.SQL("""
SELECT a.pid, a.usename, a.application_name, a.state, a.query,
       EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8, ({signallable}) AS signallable,
       COALESCE(a.wait_event_type = 'Lock', false) AS waiting
  FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.pid = ANY(%(pids)s)
""").format(signallable=_SIGNALLABLE)

_LONG_QUERIES = sql.SQL("""
SELECT a.pid, a.usename, a.application_name, a.state, a.query,
       EXTRACT(EPOCH FROM clock_timestamp() - a.query_start)::float8, ({signallable}) AS signallable,
       COALESCE(a.wait_event_type = 'Lock', false) AS waiting
  FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.datname = current_database() AND a.state = 'active' AND a.backend_type = 'client backend'
   AND a.pid <> pg_backend_pid() AND clock_timestamp() - a.query_start >= %(min_seconds)s * interval '1 second'
 ORDER BY a.query_start
""").format(signallable=_SIGNALLABLE)
# Both queries above return: pid, user, application_name, state, query, seconds, signallable, waiting.


# Sessions of this database whose state, wait and query this role may not read (other roles' sessions,
# without pg_read_all_stats), and whether it holds pg_read_all_stats (superusers do).
_VISIBILITY = """
SELECT count(*) FILTER (WHERE datname = current_database() AND query = '<insufficient privilege>'),
       pg_has_role('pg_read_all_stats', 'USAGE')
  FROM pg_stat_activity
"""


def _require_full_view(conn: psycopg.Connection, target: str) -> None:
    """Raise ``CannotObserve`` when some session of the target database is hidden from this role."""
    hidden, privileged = conn.execute(_VISIBILITY).fetchone()
    if hidden:
        role = conn.info.user
        fix = "" if privileged else f"; grant it pg_read_all_stats (GRANT pg_read_all_stats TO {role})"
        raise CannotObserve(
            f"postgres {target}: cannot observe {hidden} session(s) of other roles: role {role} may not read "
            f"their state, lock waits or queries{fix}"
        )


def _blocked(conn: psycopg.Connection) -> list[tuple[int, float, list[int]]]:
    return conn.execute(_BLOCKED).fetchall()


def observe(params: dict) -> dict:
    """Facts about the target's sessions (and, with ``table``, the table); ``CannotObserve`` when
    some sessions are hidden from GRACE's role."""
    with connect(params["target"]) as conn:
        _require_full_view(conn, params["target"])
        return _session_facts(conn, params) | (_table_facts(conn, params["table"]) if params.get("table") else {})


def observe_table(params: dict) -> dict:
    """``postgres.vacuum_analyze``'s facts: the table's, always readable by its owner; the session
    facts only when every session is visible (otherwise left out, never reported as zero)."""
    with connect(params["target"]) as conn:
        facts = _table_facts(conn, params["table"]) if params.get("table") else {}
        try:
            _require_full_view(conn, params["target"])
        except CannotObserve as exc:
            return facts | {"sessions_hidden": str(exc)}
        return _session_facts(conn, params) | facts


def _session_facts(conn: psycopg.Connection, params: dict) -> dict:
    min_block = params.get("min_blocked_seconds", 30)
    min_query = params.get("min_seconds", 300)
    blocked = _blocked(conn)
    long_queries = conn.execute(_LONG_QUERIES, {"min_seconds": min_query, "protected": protected_applications()})
    long_queries = long_queries.fetchall()
    idle_in_tx, connections = conn.execute(
        "SELECT count(*) FILTER (WHERE state = 'idle in transaction'), count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND backend_type = 'client backend'"
    ).fetchone()
    facts = {
        "blocked_sessions": len(blocked),
        "longest_block_seconds": round(max((b[1] for b in blocked), default=0.0), 3),
        "sessions_blocked_over_threshold": sum(1 for b in blocked if b[1] >= min_block),
        "blocking_pids": sorted({pid for b in blocked for pid in b[2]}),
        "long_queries": len(long_queries),
        "longest_query_seconds": round(max((q[5] for q in long_queries), default=0.0), 3),
        "idle_in_transaction": idle_in_tx,
        "connections": connections,
    }
    return facts


def _table_facts(conn: psycopg.Connection, table: str) -> dict:
    row = conn.execute(
        "SELECT n_dead_tup, n_live_tup, last_vacuum, last_autovacuum, last_analyze, last_autoanalyze"
        " FROM pg_stat_user_tables WHERE relid = to_regclass(%s)",
        [table],
    ).fetchone()
    if row is None:
        return {"table_exists": False}
    last_vacuum = max((t for t in row[2:4] if t), default=None)
    last_analyze = max((t for t in row[4:6] if t), default=None)
    return {
        "table_exists": True,
        "dead_tuples": row[0],
        "live_tuples": row[1],
        "last_vacuum": last_vacuum.isoformat() if last_vacuum else None,
        "last_analyze": last_analyze.isoformat() if last_analyze else None,
    }


# The SQL lexemes that can carry data, scanned left to right. Whatever is not matched (keywords and
# identifiers, operators, punctuation, white space) is kept. A construct still open at the end of the
# text (PostgreSQL cuts pg_stat_activity.query at track_activity_query_size) runs to the end, so a
# literal cut in half is dropped whole. Plain '...' strings follow standard_conforming_strings (on
# since PostgreSQL 9.1): a backslash there is an ordinary character.
_SQL_LEXEME = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*|)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<estring>[Ee]'(?:''|\\.|[^'\\])*(?:'|\Z))
    | (?P<string>(?:[BbXxNn]|[Uu]&)?'(?:''|[^'])*(?:'|\Z))
    | (?P<ident>(?:[Uu]&)?"(?:""|[^"])*(?:"|\Z))
    | (?P<param>\$\d+)
    | (?P<word>[^\W\d][\w$]*)
    | (?P<number>0[xXoObB][0-9A-Fa-f_]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?)
    """,
    re.DOTALL | re.VERBOSE,
)
QUERY_TEXT_MAX = 200


def redact_sql(text: str | None, limit: int = QUERY_TEXT_MAX) -> str | None:
    """``text`` with its string and numeric literals replaced by ``?`` and its comments removed, then
    cut to ``limit`` characters: enough to tell which statement a session ran, not the data in it."""
    if text is None or text == "<insufficient privilege>":
        return text

    def replace(match: re.Match) -> str:
        kind = match.lastgroup if match.lastgroup != "tag" else "dollar"
        if kind == "comment":
            return " "
        if kind in ("dollar", "estring", "string", "number"):
            return "?"
        return match.group()

    redacted = re.sub(r"\s+", " ", _SQL_LEXEME.sub(replace, text)).strip()
    return redacted if len(redacted) <= limit else redacted[: limit - 1] + "…"


def _signal_each(
    conn: psycopg.Connection, rows: list[tuple], statement: str, limit: int, *, skip_waiting: bool
) -> tuple[list[dict], list[dict]]:
    """Run ``statement`` (pg_terminate_backend / pg_cancel_backend) for each signallable session, up to ``limit``."""
    done, skipped = [], []
    for pid, user, application, state, query, seconds, signallable, waiting in rows:
        session = {
            "pid": pid,
            "user": user,
            "application_name": application,
            "state": state,
            "query": redact_sql(query),
            "seconds": round(seconds or 0.0, 3),
        }
        if not signallable:
            reason = "protected (superuser, replication, GRACE or not a client)"
        elif skip_waiting and waiting:
            reason = "itself waiting on a lock (not the head of the queue)"
        elif len(done) >= limit:
            reason = "max_sessions reached"
        elif conn.execute(statement, [pid]).fetchone()[0]:
            done.append(session)
            continue
        else:
            reason = "already gone"
        skipped.append(session | {"reason": reason})
    return done, skipped


def terminate_blockers(params: dict) -> dict:
    with connect(params["target"]) as conn:
        _require_full_view(conn, params["target"])
        threshold = params["min_blocked_seconds"]
        blockers = {pid for _, waited, pids in _blocked(conn) if waited >= threshold for pid in pids}
        if not blockers:
            return {"terminated": [], "skipped": [], "blockers_found": 0}
        rows = conn.execute(_SESSIONS, {"pids": sorted(blockers), "protected": protected_applications()}).fetchall()
        # Longest-running transaction first; a blocker that is itself waiting on a lock is a victim
        # further down the queue: it goes on once the head of the queue is gone.
        rows.sort(key=lambda r: -(r[5] or 0))
        terminated, skipped = _signal_each(
            conn, rows, "SELECT pg_terminate_backend(%s, 5000)", params["max_sessions"], skip_waiting=True
        )
    return {"terminated": terminated, "skipped": skipped, "blockers_found": len(blockers)}


def cancel_long_queries(params: dict) -> dict:
    with connect(params["target"]) as conn:
        _require_full_view(conn, params["target"])
        rows = conn.execute(
            _LONG_QUERIES, {"min_seconds": params["min_seconds"], "protected": protected_applications()}
        ).fetchall()
        cancelled, skipped = _signal_each(
            conn, rows, "SELECT pg_cancel_backend(%s)", params["max_sessions"], skip_waiting=False
        )
    return {"cancelled": cancelled, "skipped": skipped}


def vacuum_analyze(params: dict) -> dict:
    with connect(params["target"], statement_timeout_ms=settings.GRACE_PG_MAINTENANCE_TIMEOUT_MS) as conn:
        if params.get("table"):
            if conn.execute("SELECT to_regclass(%s)", [params["table"]]).fetchone()[0] is None:
                raise ActionRefused(f"postgres {params['target']}: no table {params['table']!r}")
            name = sql.SQL(".").join(sql.Identifier(part) for part in params["table"].split("."))
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(name))
        else:
            conn.execute("VACUUM (ANALYZE)")
    return {"vacuumed": params.get("table") or "database"}


_COMMON = {
    "family": "local",
    "observe": observe,
    "target_param": "target",
    "resource_kind": "postgres",
    "binds": {"target": "target"},
}

registry.register(
    Action(
        name="postgres.terminate_blockers",
        params=BlockerParams,
        execute=terminate_blockers,
        tier=1,
        idempotent=True,
        timeout=60,
        description="Terminate client sessions that have blocked others for at least min_blocked_seconds.",
        default_contract=[
            {"field": "sessions_blocked_over_threshold", "op": "==", "value": 0, "within": 15},
        ],
        **_COMMON,
    )
)
registry.register(
    Action(
        name="postgres.cancel_long_queries",
        params=LongQueryParams,
        execute=cancel_long_queries,
        tier=1,
        idempotent=True,
        timeout=60,
        description="Cancel statements running for at least min_seconds (the sessions stay connected).",
        default_contract=[{"field": "long_queries", "op": "==", "value": 0, "within": 15}],
        **_COMMON,
    )
)
registry.register(
    Action(
        name="postgres.vacuum_analyze",
        params=VacuumParams,
        execute=vacuum_analyze,
        tier=1,
        idempotent=True,
        timeout=900,
        description="VACUUM (ANALYZE) one table or the whole database.",
        **(_COMMON | {"observe": observe_table}),
    )
)
