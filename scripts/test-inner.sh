#!/usr/bin/env bash
# The checks `make test` runs once the services are up.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$GRACE_ROOT"

say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

say "migrations are committed"
(unset DATABASE_URL; "$PY" manage.py makemigrations --check --dry-run)

say "pytest on SQLite"
(unset DATABASE_URL; "$VENV/bin/pytest" --durations=15 "$@")

say "pytest on PostgreSQL"
DATABASE_URL="$GRACE_PG_URL" "$VENV/bin/pytest" --durations=15 "$@"
