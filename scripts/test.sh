#!/usr/bin/env bash
# `make test`: lint, migration check, and the pytest suite on SQLite and on
# PostgreSQL, against throwaway services (see scripts/with-services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/with-services.sh bash scripts/test-inner.sh "$@"
