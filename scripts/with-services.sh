#!/usr/bin/env bash
# Run a command with a throwaway redis-server and PostgreSQL 15 cluster on free
# loopback ports. Exports REDIS_URL, GRACE_PG_URL and GRACE_VAR_DIR (a temporary
# data directory); the command chooses its database through DATABASE_URL.
# Everything started here is torn down when the command ends, even on failure.
# PostgreSQL runs without fsync and synchronous commit (fast tests, nothing to keep);
# GRACE_PG_DURABLE=1 keeps both on, for benchmarks whose figures must hold on real disks.
#   bash scripts/with-services.sh .venv/bin/pytest tests/incidents
#   bash scripts/with-services.sh bash -c 'DATABASE_URL=$GRACE_PG_URL .venv/bin/pytest tests/incidents'
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$GRACE_ROOT"

bootstrap_venv requirements-dev.txt
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
    for hook in "$GRACE_ROOT"/scripts/services.d/*.stop; do
        [ -e "$hook" ] && source "$hook"
    done
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
PG_SPEED="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" PG_MODE="no fsync"
if [ "${GRACE_PG_DURABLE:-0}" = 1 ]; then PG_SPEED="" PG_MODE="durable: fsync and synchronous_commit on"; fi
PGUSER_NAME="$(pg_user)"
mkdir -p "$TMP/pg/sock"
[ "$(id -u)" = 0 ] && chown -R "$PGUSER_NAME" "$TMP/pg"
say "starting PostgreSQL 15 on 127.0.0.1:$PG_PORT (as $PGUSER_NAME, $PG_MODE)"
as_pg_user "$PGUSER_NAME" "$PG_BIN/initdb" -D "$PGDATA_DIR" -U grace --auth=trust -E UTF8 --no-sync >/dev/null
as_pg_user "$PGUSER_NAME" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$TMP/pg/log" -w -t 30 start \
    -o "-p $PG_PORT -k $TMP/pg/sock -c listen_addresses=127.0.0.1 $PG_SPEED -c max_connections=200" >/dev/null \
    || { cat "$TMP/pg/log" >&2; die "PostgreSQL did not start"; }
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U grace grace

export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export GRACE_PG_URL="postgres://grace@127.0.0.1:$PG_PORT/grace"
export GRACE_VAR_DIR="$TMP/var"
export GRACE_SERVICES_TMP="$TMP"
export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$GRACE_VAR_DIR"

# Optional extra services (moto, dockerd, ...) register start/stop hooks here.
for hook in "$GRACE_ROOT"/scripts/services.d/*.start; do
    [ -e "$hook" ] && source "$hook"
done

"$@"
