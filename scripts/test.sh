#!/usr/bin/env bash
# `make test`: lint and the migration check, then the pytest suite on SQLite and on PostgreSQL. Each pass runs
# against its own throwaway services (scripts/with-services.sh: Redis, PostgreSQL, moto, dockerd), so the two
# passes run side by side: most of a pass waits on real workers, servers and browsers, not on the CPU.
# GRACE_TEST_PASSES=serial runs them one after the other, in this terminal; arguments go to pytest.
#   make test                                   # everything
#   bash scripts/test.sh tests/incidents -x     # a part, on both databases
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Installs (apt, the venv) happen here, once, before two passes could race for them.
bash scripts/with-services.sh bash scripts/test-inner.sh checks

if [ "${GRACE_TEST_PASSES:-parallel}" = serial ]; then
    bash scripts/with-services.sh bash scripts/test-inner.sh sqlite "$@"
    exec bash scripts/with-services.sh bash scripts/test-inner.sh postgresql "$@"
fi

passes=(sqlite postgresql)
LOGS="$(mktemp -d /tmp/grace-test-logs.XXXXXX)"
pids=()
for pass in "${passes[@]}"; do
    # Each line is shown as it comes, tagged with its pass; the pass's own log keeps it whole.
    (bash scripts/with-services.sh bash scripts/test-inner.sh "$pass" "$@" 2>&1 \
        | tee "$LOGS/$pass.log" | sed -u "s/^/[$pass] /"; exit "${PIPESTATUS[0]}") &
    pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; wait; exit 130' INT TERM

failed=()
for i in "${!passes[@]}"; do
    wait "${pids[$i]}" || failed+=("${passes[$i]}")
done
for pass in "${passes[@]}"; do
    say "pytest on $pass: $(grep -E '^=+ .*(passed|failed|error).* in ' "$LOGS/$pass.log" | tail -n 1 | tr -d '=' | sed 's/^ *//')"
done
rm -rf "$LOGS"
[ ${#failed[@]} -eq 0 ] || die "the ${failed[*]} pass failed (its lines are tagged [${failed[0]}] above)"
