# Shared helpers for GRACE's make targets. Sourced, not executed.
# shellcheck shell=bash

GRACE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$GRACE_ROOT/.venv"
PY="$VENV/bin/python"
PG_BIN="${GRACE_PG_BIN:-/usr/lib/postgresql/15/bin}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@" || die "needs root to run: $*"
    else die "needs root (or sudo) to run: $*"; fi
}

APT_UPDATED=""
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    if [ -z "$APT_UPDATED" ]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            echo "$candidate"; return 0
        fi
    done
    die "GRACE needs Python 3.11 (python3.11 or python3 on PATH)"
}

# Create .venv and install a requirements file (default requirements.txt, what GRACE needs to run;
# the test services use requirements-dev.txt, which adds the test and development tools).
# Installs again only when the file (or requirements.txt it includes) changed.
bootstrap_venv() {
    local file="${1:-requirements.txt}" stamp want
    stamp="$VENV/.$(basename "$file").sha256"
    want="$(cat "$GRACE_ROOT/$file" "$GRACE_ROOT/requirements.txt" | sha256sum | cut -d' ' -f1)"
    if [ ! -x "$PY" ]; then
        say "creating .venv"
        "$(find_python)" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing $file into .venv"
        "$PY" -m pip install -q --disable-pip-version-check --upgrade pip
        "$PY" -m pip install -q --disable-pip-version-check -r "$GRACE_ROOT/$file"
        echo "$want" > "$stamp"
    fi
}

ensure_redis_binary() {
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || die "redis-server is still missing after apt-get install"
}

ensure_postgres_binaries() {
    [ -x "$PG_BIN/initdb" ] || apt_install postgresql-15
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 binaries not found in $PG_BIN"
}

free_port() {
    "$PY" - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

wait_for_port() {  # host port seconds
    local deadline=$((SECONDS + $3))
    until "$PY" -c "import socket,sys; socket.create_connection(('$1', $2), 0.5).close()" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# The unprivileged user PostgreSQL runs as when we are root.
pg_user() {
    if [ "$(id -u)" != 0 ]; then id -un; return; fi
    if ! id grace-pg >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin grace-pg
    fi
    echo grace-pg
}

as_pg_user() {  # user cmd...
    local user="$1"; shift
    if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}
