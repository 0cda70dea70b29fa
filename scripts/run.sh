#!/usr/bin/env bash
# `make run`: the whole service on one machine, in the foreground.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$GRACE_ROOT"

bootstrap_venv
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export GRACE_PORT="${GRACE_PORT:-8000}"
VAR="${GRACE_VAR_DIR:-$GRACE_ROOT/var}"
mkdir -p "$VAR/redis"
# Where this GRACE answers, for `manage.py grace_demo` in another terminal (which may not have GRACE_PORT set).
echo "http://127.0.0.1:$GRACE_PORT" > "$VAR/web-url"

procfile="$VAR/Procfile"
: > "$procfile"
if "$PY" -c "import redis,os; redis.Redis.from_url(os.environ['REDIS_URL'], socket_connect_timeout=1).ping()" 2>/dev/null; then
    say "using the Redis that answers at $REDIS_URL"
else
    read -r rhost rport < <("$PY" -c "from urllib.parse import urlparse; import os; u=urlparse(os.environ['REDIS_URL']); print(u.hostname or '', u.port or 6379)")
    case "$rhost" in
        127.0.0.1|localhost) ;;
        *) die "no Redis answers at $REDIS_URL, and GRACE only starts a local one on 127.0.0.1" ;;
    esac
    ensure_redis_binary
    say "starting redis-server on 127.0.0.1:$rport (data in $VAR/redis)"
    echo "redis: exec redis-server --port $rport --bind 127.0.0.1 --dir $VAR/redis --appendonly yes --save '' --daemonize no" >> "$procfile"
fi

say "migrating the database"
"$PY" manage.py migrate --noinput -v0
"$PY" manage.py collectstatic --noinput -v0
"$PY" manage.py grace_setup

cat >> "$procfile" <<PROCS
web: exec $PY -m grace_site.serve --port $GRACE_PORT --workers ${GRACE_WEB_WORKERS:-2} --threads ${GRACE_WEB_THREADS:-8} --access-log
worker: exec $VENV/bin/celery -A grace_site worker -Q heal.local,heal.cloud,sweeps,benchmarks,default,intake -c ${GRACE_WORKER_CONCURRENCY:-2} -l info
beat: exec $VENV/bin/celery -A grace_site beat -l info --pidfile= --schedule=$VAR/celerybeat-schedule
PROCS

cat >&2 <<MSG

  GRACE is starting.
    admin:     http://127.0.0.1:$GRACE_PORT/admin/
    API docs:  http://127.0.0.1:$GRACE_PORT/api/docs/
    health:    http://127.0.0.1:$GRACE_PORT/api/health/
  In another terminal, .venv/bin/python manage.py grace_demo heals a real SQLite WAL
  (it finds this port in $VAR/web-url).
  Ctrl-C stops every process started here.

MSG
exec "$VENV/bin/honcho" -f "$procfile" -d "$GRACE_ROOT" start
