#!/usr/bin/env bash
# One part of `make test`, run inside scripts/with-services.sh:
#   checks       ruff and the migration check
#   sqlite       the pytest suite on SQLite (arguments go to pytest)
#   postgresql   the pytest suite on PostgreSQL
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$GRACE_ROOT"
part="${1:?checks, sqlite or postgresql}"
shift

case "$part" in
    checks)
        say "ruff"
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        say "migrations are committed"
        (unset DATABASE_URL; "$PY" manage.py makemigrations --check --dry-run)
        ;;
    sqlite)
        say "pytest on SQLite"
        (unset DATABASE_URL; "$VENV/bin/pytest" --durations=15 "$@")
        ;;
    postgresql)
        say "pytest on PostgreSQL"
        DATABASE_URL="$GRACE_PG_URL" "$VENV/bin/pytest" --durations=15 "$@"
        ;;
    *) die "unknown part $part: checks, sqlite or postgresql" ;;
esac
