"""Smoke-suite latency against real services (`make bench`, or `bash scripts/bench.sh bench/bench_smoke.py`).

Starts a Celery worker, celery beat and granian serving GRACE against the Redis and PostgreSQL that
scripts/bench.sh provides, then runs the smoke suite BENCH_SMOKE_RUNS times in this process (exactly
what the scheduled task and ``POST /api/verification/benchmarks/smoke/`` run). Beside it, the baseline
measured in the same run: the four raw round trips alone (SELECT 1, Redis SET+GET, grace.ping through
the worker, GET /api/health/), with no suite bookkeeping. Prints p50/p99 and writes var/bench/smoke.json.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT = _free_port()
HEALTH_URL = f"http://127.0.0.1:{PORT}/api/health/"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")
os.environ["GRACE_BENCH_HTTP_URLS"] = HEALTH_URL
os.environ["GRACE_ANON_THROTTLE"] = "1000000/minute"  # the health URL is anonymous: do not throttle the bench

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
import requests  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from grace_site import redis as grace_redis  # noqa: E402
from grace_site import serve  # noqa: E402
from grace_site.celery import app as celery_app  # noqa: E402
from learning import benchmarks, defaults  # noqa: E402
from learning.estimators import percentile  # noqa: E402

RUNS = int(os.environ.get("BENCH_SMOKE_RUNS", "60"))
WARMUP = 5
TARGET_P50_MS = 100.0


class Proc:
    def __init__(self, name: str, argv: list[str], log_dir: Path):
        self.name = name
        self.log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=dict(os.environ), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def _wait(what: str, ready, procs: list[Proc], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dead = [p.name for p in procs if not p.alive()]
        if dead:
            raise SystemExit(f"{', '.join(dead)} exited during start-up (see var/bench/*.log)")
        if ready():
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} was not ready within {seconds} s")


def _health_ok() -> bool:
    try:
        return requests.get(HEALTH_URL, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _raw_round_trips(client: redis.Redis) -> dict[str, float]:
    out = {}
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    out["database"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    client.set("grace:bench:raw", "1", ex=60)
    client.get("grace:bench:raw")
    out["redis"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    result = celery_app.send_task("grace.ping", queue="default")
    result.get(timeout=5)
    result.forget()
    out["celery"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    requests.get(HEALTH_URL, timeout=5).raise_for_status()
    out["http"] = (time.perf_counter() - started) * 1000
    out["total"] = sum(out.values())
    return out


def _row(name: str, samples: list[float], baseline: list[float] | None = None) -> str:
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    text = f"{name:<28} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms"
    if baseline:
        text += f"   x{p50 / percentile(baseline, 50):5.2f} of baseline p50"
    return text


def _ensure_database() -> None:
    """scripts/bench.sh starts an empty PostgreSQL cluster: create the database DATABASE_URL names."""
    if connection.vendor != "postgresql":
        return
    import psycopg
    from psycopg import sql

    params = connection.get_connection_params()
    name = params.pop("dbname")
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def main() -> int:
    log_dir = ROOT / "var" / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    _ensure_database()
    call_command("migrate", verbosity=0)
    defaults.install()
    py = sys.executable
    worker = [
        py,
        "-m",
        "celery",
        "-A",
        "grace_site",
        "worker",
        "-Q",
        "default",
        "-c",
        "2",
        "-n",
        f"bench-{PORT}@localhost",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "warning",
    ]
    beat = [
        py,
        "-m",
        "celery",
        "-A",
        "grace_site",
        "beat",
        "-l",
        "warning",
        "--pidfile=",
        f"--schedule={log_dir / 'beat-schedule'}",
        "--max-interval",
        "1",
    ]
    web = serve.command(port=PORT, workers=2, threads=4)
    procs = [Proc("worker", worker, log_dir), Proc("beat", beat, log_dir), Proc("web", web, log_dir)]
    try:
        _wait("the Celery worker", lambda: bool(celery_app.control.ping(timeout=0.5)), procs)
        _wait("the web server, with a healthy /api/health/", _health_ok, procs)
        client = grace_redis.client()
        for _ in range(WARMUP):
            _raw_round_trips(client)
            benchmarks.run_suite("smoke", trigger="manual")
        raw: list[dict[str, float]] = []
        suite_ms: list[float] = []
        checks: dict[str, list[float]] = {}
        failed = 0
        for _ in range(RUNS):
            raw.append(_raw_round_trips(client))
            started = time.perf_counter()
            run = benchmarks.run_suite("smoke", trigger="manual")
            suite_ms.append((time.perf_counter() - started) * 1000)
            failed += run.status == "failed"
            for metric, value in run.results.filter(ok=True).values_list("metric", "value"):
                checks.setdefault(metric, []).append(value)
    finally:
        for proc in reversed(procs):
            proc.stop()

    baseline = [r["total"] for r in raw]
    print(f"smoke suite, {RUNS} runs after {WARMUP} warm-up, database {connection.vendor}, 2 cores shared")
    print(_row("baseline: raw round trips", baseline))
    for name in ("database", "redis", "celery", "http"):
        print(_row(f"  raw {name}", [r[name] for r in raw]))
    print(_row("smoke suite (run_suite)", suite_ms, baseline))
    for metric, values in sorted(checks.items()):
        print(_row(f"  check {metric}", values))
    p50 = percentile(suite_ms, 50)
    verdict = "PASS" if p50 < TARGET_P50_MS and not failed else "FAIL"
    print(f"{verdict}: smoke p50 {p50:.1f} ms (target < {TARGET_P50_MS:.0f} ms), {failed} failed runs")
    report = {
        "runs": RUNS,
        "database": connection.vendor,
        "suite_ms": {"p50": p50, "p99": percentile(suite_ms, 99)},
        "baseline_ms": {"p50": percentile(baseline, 50), "p99": percentile(baseline, 99)},
        "checks_ms": {m: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for m, v in checks.items()},
        "failed_runs": failed,
        "target_p50_ms": TARGET_P50_MS,
    }
    (log_dir / "smoke.json").write_text(json.dumps(report, indent=2))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
