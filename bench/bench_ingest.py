"""Signal ingestion through gunicorn on loopback, beside a minimal Django view on the same server.

Scenarios (each through ``POST /api/webhooks/alertmanager/`` with Alertmanager's version 4 body):

- single alert per delivery, distinct fingerprints (every alert opens an incident);
- single alert per delivery, identical fingerprints (every alert is absorbed by one incident);
- 100 alerts per delivery, distinct / identical.

Baseline, measured in the same run on the same server: a minimal Django view that parses the same JSON body
and answers (``/bench/baseline/``), for a single-alert body and a 100-alert body. Reported: alerts/s and
per-request p50/p99 latency, and each scenario's throughput as a ratio of its baseline.

Run with ``make bench`` (or ``bash scripts/bench.sh bench/bench_ingest.py``). The gunicorn server imports
this module for its URLs (``bench.bench_ingest:application``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")

from django.http import JsonResponse  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
SINGLE_REQUESTS = int(os.environ.get("BENCH_SINGLE_REQUESTS", "1500"))
BATCH_REQUESTS = int(os.environ.get("BENCH_BATCH_REQUESTS", "60"))
BATCH_SIZE = 100
WORKERS = os.environ.get("BENCH_WEB_WORKERS", "2")
TOKEN = "bench-webhook-token-" + uuid.uuid4().hex


@csrf_exempt
def baseline(request):
    """The floor: Django's full middleware stack, a JSON body parsed, a JSON answer."""
    body = json.loads(request.body)
    return JsonResponse({"alerts": len(body.get("alerts", []))})


urlpatterns: list = []  # filled once Django is set up (GRACE's URLs import models)
_application = None


def application(environ, start_response):
    """GRACE's WSGI app with this module as URLconf (GRACE's URLs plus the baseline view)."""
    global _application, urlpatterns
    if _application is None:
        import django
        from django.conf import settings
        from django.core.wsgi import get_wsgi_application

        django.setup()
        urlpatterns = [path("bench/baseline/", baseline), path("", include("grace_site.urls"))]
        settings.ROOT_URLCONF = __name__
        _application = get_wsgi_application()
    return _application(environ, start_response)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ensure_database() -> None:
    """The throwaway PostgreSQL cluster starts without GRACE's database: create it."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"], dbname="postgres",
        autocommit=True,
    ) as admin:  # fmt: skip
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))


def alert(alertname: str, **labels: str) -> dict:
    return {
        "status": "firing",
        "labels": {"alertname": alertname, "service": "orders-db", "severity": "critical", **labels},
        "annotations": {"summary": "orders-db locked"},
        "startsAt": "2026-11-25T10:14:11.436741Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://example/probe",
        "fingerprint": "3d799487cd717be8",
    }


def delivery(alerts: list[dict]) -> bytes:
    return json.dumps(
        {
            "receiver": "webhook",
            "status": "firing",
            "alerts": alerts,
            "groupLabels": {"alertname": "DatabaseLocked"},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://vm:9093",
            "version": "4",
            "groupKey": '{}:{alertname="DatabaseLocked"}',
            "truncatedAlerts": 0,
        }
    ).encode()


def run(url: str, bodies: list[bytes], alerts_per_body: int) -> dict:
    import requests

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    shares = [bodies[i::CLIENTS] for i in range(CLIENTS)]

    def client(share: list[bytes]) -> tuple[list[float], list[int]]:
        latencies, statuses = [], []
        with requests.Session() as session:
            for body in share:
                started = time.perf_counter()
                response = session.post(url, data=body, headers=headers, timeout=60)
                latencies.append((time.perf_counter() - started) * 1000)
                statuses.append(response.status_code)
        return latencies, statuses

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client, shares))
    elapsed = time.perf_counter() - started
    latencies = [value for lat, _ in results for value in lat]
    statuses = [value for _, st in results for value in st]
    bad = sorted({status for status in statuses if status != 200})
    return {
        "requests": len(bodies),
        "alerts": len(bodies) * alerts_per_body,
        "seconds": round(elapsed, 3),
        "alerts_per_s": round(len(bodies) * alerts_per_body / elapsed, 1),
        "p50_ms": round(pct(latencies, 0.50), 2),
        "p99_ms": round(pct(latencies, 0.99), 2),
        "non_200": bad,
    }


def wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    raise RuntimeError("gunicorn did not answer within 60 s")


def main() -> None:
    import signal
    import socket

    import django

    django.setup()
    from django.core.management import call_command

    from incidents import defaults

    ensure_database()
    call_command("migrate", "--noinput", verbosity=0)
    defaults.install()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    out_dir = ROOT / "var" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "ingest-gunicorn.log"
    env = {**os.environ, "GRACE_WEBHOOK_TOKEN": TOKEN}
    argv = [str(ROOT / ".venv/bin/gunicorn"), "bench.bench_ingest:application", "--bind", f"127.0.0.1:{port}",
            "--workers", WORKERS, "--threads", "4", "--worker-class", "gthread", "--log-level", "warning"]  # fmt: skip
    web = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{base}/api/incidents/", web, log)
        hook, floor = f"{base}/api/webhooks/alertmanager/", f"{base}/bench/baseline/"
        run_id = uuid.uuid4().hex[:8]
        same = alert("DatabaseLocked", bench=run_id)
        single_same = [delivery([same])] * SINGLE_REQUESTS
        single_new = [delivery([alert("DatabaseLocked", bench=f"{run_id}-{i}")]) for i in range(SINGLE_REQUESTS)]
        batch_same = [delivery([same] * BATCH_SIZE)] * BATCH_REQUESTS
        batch_new = [
            delivery([alert("DatabaseLocked", bench=f"{run_id}-b{i}-{j}") for j in range(BATCH_SIZE)])
            for i in range(BATCH_REQUESTS)
        ]
        run(floor, single_same[:100], 1)  # warm up both paths
        run(hook, [delivery([alert("DatabaseLocked", bench=f"{run_id}-warm")])] * 100, 1)
        results = {
            "baseline_single": run(floor, single_same, 1),
            "single_distinct": run(hook, single_new, 1),
            "single_identical": run(hook, single_same, 1),
            "baseline_batch100": run(floor, batch_same, BATCH_SIZE),
            "batch100_distinct": run(hook, batch_new, BATCH_SIZE),
            "batch100_identical": run(hook, batch_same, BATCH_SIZE),
        }
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(30)
    for name in ("single_distinct", "single_identical"):
        results[name]["vs_baseline"] = round(
            results[name]["alerts_per_s"] / results["baseline_single"]["alerts_per_s"], 3
        )
    for name in ("batch100_distinct", "batch100_identical"):
        results[name]["vs_baseline"] = round(
            results[name]["alerts_per_s"] / results["baseline_batch100"]["alerts_per_s"], 3
        )
    summary = {
        "database": django.db.connection.vendor,
        "cpus": os.cpu_count(),
        "clients": CLIENTS,
        "web_workers": int(WORKERS),
        "results": results,
        "targets": {
            "batched_alerts_per_s>=2500": results["batch100_distinct"]["alerts_per_s"] >= 2500,
            "duplicates_no_slower_than_new_single": results["single_identical"]["alerts_per_s"]
            >= results["single_distinct"]["alerts_per_s"],
            "duplicates_no_slower_than_new_batch": results["batch100_identical"]["alerts_per_s"]
            >= results["batch100_distinct"]["alerts_per_s"],
        },
    }
    print(f"{'scenario':22} {'alerts/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs baseline':>12}")
    for name, row in results.items():
        ratio = row.get("vs_baseline", "")
        print(f"{name:22} {row['alerts_per_s']:>10} {row['p50_ms']:>8} {row['p99_ms']:>8} {ratio!s:>12}")
    print(json.dumps(summary["targets"], indent=2))
    (out_dir / "ingest.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
