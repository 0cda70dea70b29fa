#!/usr/bin/env bash
# `make test`: lint, migration check, and the pytest suite on SQLite and on
# PostgreSQL, against a throwaway redis-server and PostgreSQL 15 cluster on
# free loopback ports. Everything it starts is torn down, even on failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$GRACE_ROOT"

bootstrap_venv
ensure_redis_binary
ensure_postgres_binaries

TMP="$(mktemp -d /tmp/grace-test.XXXXXX)"
chmod 755 "$TMP"
REDIS_PID=""
PGDATA_DIR="$TMP/pg/data"
PGUSER_NAME=""

cleanup() {
    local rc=$?
    set +e
    if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; fi
    if [ -n "$PGUSER_NAME" ] && [ -f "$PGDATA_DIR/postmaster.pid" ]; then
        as_pg_user "$PGUSER_NAME" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

REDIS_PORT="$(free_port)"
say "starting redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$TMP" --logfile "$TMP/redis.log" &
REDIS_PID=$!
wait_for_port 127.0.0.1 "$REDIS_PORT" 10 || die "redis-server did not start (see $TMP/redis.log)"

PG_PORT="$(free_port)"
PGUSER_NAME="$(pg_user)"
mkdir -p "$TMP/pg/sock"
[ "$(id -u)" = 0 ] && chown -R "$PGUSER_NAME" "$TMP/pg"
say "starting PostgreSQL 15 on 127.0.0.1:$PG_PORT (as $PGUSER_NAME)"
as_pg_user "$PGUSER_NAME" "$PG_BIN/initdb" -D "$PGDATA_DIR" -U grace --auth=trust -E UTF8 --no-sync >/dev/null
as_pg_user "$PGUSER_NAME" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$TMP/pg/log" -w -t 30 start \
    -o "-p $PG_PORT -k $TMP/pg/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null \
    || { cat "$TMP/pg/log" >&2; die "PostgreSQL did not start"; }

export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export GRACE_VAR_DIR="$TMP/var"
export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$GRACE_VAR_DIR"
PG_URL="postgres://grace@127.0.0.1:$PG_PORT/grace"

say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

say "migrations are committed"
"$PY" manage.py makemigrations --check --dry-run

say "pytest on SQLite"
(unset DATABASE_URL; "$VENV/bin/pytest" "$@")

say "pytest on PostgreSQL"
DATABASE_URL="$PG_URL" "$VENV/bin/pytest" "$@"
