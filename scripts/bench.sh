#!/usr/bin/env bash
# `make bench`: run every bench/bench_*.py (or the ones named) against throwaway
# services. Each benchmark measures its own baseline in the same run and
# reports ratios; results are also written as JSON under var/bench/.
# PostgreSQL keeps fsync and synchronous commit on (GRACE_PG_DURABLE=1), so figures that depend on commits
# reaching the disk are measured as a production database would give them; GRACE_PG_DURABLE=0 for the
# faster, non-durable cluster the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
# Durable PostgreSQL by default (fsync and synchronous_commit on): GRACE_PG_DURABLE=0 for the test settings.
export GRACE_PG_DURABLE="${GRACE_PG_DURABLE:-1}"
if [ $# -eq 0 ]; then set -- bench/bench_*.py; fi
# Every benchmark runs even when one before it fails; the run then ends non-zero, naming the ones that failed.
exec bash scripts/with-services.sh bash -c '
    set -euo pipefail
    mkdir -p var/bench
    failed=()
    for b in "$@"; do
        echo; echo "=== $b"
        rc=0
        DATABASE_URL="${BENCH_DATABASE_URL:-$GRACE_PG_URL}" .venv/bin/python "$b" || rc=$?
        if [ "$rc" -ne 0 ]; then
            echo "=== $b failed (exit $rc)" >&2
            failed+=("$b")
        fi
    done
    if [ "${#failed[@]}" -gt 0 ]; then
        echo >&2; echo "error: ${#failed[@]} of $# benchmarks failed: ${failed[*]}" >&2
        exit 1
    fi' bench "$@"
