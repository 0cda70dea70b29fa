"""Durable intake through GRACE's web server (granian, ``grace_site.serve``) on loopback, beside a minimal Django
view on the same server (and Ansible EDA's webhook when it can be installed), on PostgreSQL (durable when
``make bench`` starts it) and on SQLite.

Load comes from wrk (installed with apt when missing), one Lua script per scenario, all through
``POST /api/webhooks/alertmanager/`` with Alertmanager's version 4 body and a channel token:

- single alert per POST, new fingerprints and duplicates, at 16 and 64 connections;
- 100 alerts per POST, new and duplicate, at 16 connections;
- alert accepted to incident visible (the delivery's ``received_at`` to its ``processed_at``, set in the
  transaction that writes the incidents), p50/p99, with new alerts sent at 1,000 per second
  (``BENCH_PACED_RATE``) by an asyncio client on 16 keep-alive connections for 60 s (``BENCH_PACED_SECONDS``),
  with the p99 of each 10 s of arrivals, so a latency that only holds at the start shows.

Baseline, measured in the same run on the same server: a minimal Django view that parses the same JSON body
and answers (``/bench/baseline/``, the full middleware stack). A Celery worker consuming queue ``intake``
(the durable intake's consumers) runs throughout, as in production. After every scenario the backlog is
drained and the benchmark checks that the incidents' occurrences add up to the alerts of the stored (that is,
acknowledged) deliveries, and prints it. ``BENCH_INGEST_DATABASES`` (default ``postgresql,sqlite``) chooses the
databases. EDA (``BENCH_EDA=1``, the default, when ansible-rulebook can be found
or installed into ``BENCH_EDA_DIR``): its ``eda.builtin.webhook`` source with one rule and a debug action, in
rounds alternating with GRACE's single-alert scenario. ``BENCH_INGEST_SCENARIOS`` runs only the scenarios it
names (the baselines are always measured).

Run with ``make bench`` (or ``bash scripts/bench.sh bench/bench_ingest.py``). Results: ``var/bench/ingest.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")

from django.http import JsonResponse  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

from grace_site import serve  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WEB_WORKERS = os.environ.get("BENCH_WEB_WORKERS", "2")
WEB_THREADS = os.environ.get("BENCH_WEB_THREADS", "16")
CONSUMERS = os.environ.get("BENCH_CONSUMERS", "2")
PACED_RATE = int(os.environ.get("BENCH_PACED_RATE", "1000"))
# The paced scenario runs longer than the others: its latency must hold while the load is sustained.
PACED_SECONDS = max(int(os.environ.get("BENCH_PACED_SECONDS", "60")), 10)
EDA_ROUNDS = int(os.environ.get("BENCH_EDA_ROUNDS", "2"))
# Scenario names to run (comma-separated, e.g. ``single_new_16,single_duplicate_16``); empty: all of them.
ONLY = {name for name in os.environ.get("BENCH_INGEST_SCENARIOS", "").split(",") if name}


def wanted(scenario: str) -> bool:
    """Whether ``BENCH_INGEST_SCENARIOS`` asks for this scenario (baselines always run)."""
    return not ONLY or scenario in ONLY or scenario.startswith("baseline")


EDA_DIR = Path(os.environ.get("BENCH_EDA_DIR", str(Path(tempfile.gettempdir()) / "grace-bench-eda")))
TOKEN = "bench-webhook-token-" + uuid.uuid4().hex
EDA_TOKEN = "bench-eda-token-" + uuid.uuid4().hex
OUT = ROOT / "var" / "bench"


@csrf_exempt
def baseline(request):
    """The floor: Django's full middleware stack, a JSON body parsed, a JSON answer."""
    body = json.loads(request.body)
    return JsonResponse({"alerts": len(body.get("alerts", []))})


urlpatterns: list = []  # filled once Django is set up (GRACE's URLs import models)
_application = None


def application(environ, start_response):
    """GRACE's WSGI app (the light intake path in front of Django), with this module as URLconf (GRACE's URLs
    plus the baseline view)."""
    global _application, urlpatterns
    if _application is None:
        import django
        from django.conf import settings

        django.setup()
        urlpatterns = [path("bench/baseline/", baseline), path("", include("grace_site.urls"))]
        settings.ROOT_URLCONF = __name__
        from grace_site.wsgi import application as grace

        _application = grace
    return _application(environ, start_response)


# --- helpers --------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s:\n{log.read_text()[-3000:]}")


def start(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env or dict(os.environ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def ensure_database() -> None:
    """The throwaway PostgreSQL cluster starts without GRACE's database: create it."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db["PASSWORD"],
        dbname="postgres",
        autocommit=True,
    ) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))


def durability() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            values = []
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                cursor.execute(f"SHOW {name}")
                values.append(f"{name}={cursor.fetchone()[0]}")
            return "postgresql " + " ".join(values)
        cursor.execute("PRAGMA journal_mode")
        mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(cursor.fetchone()[0], "?")
        return f"sqlite journal_mode={mode} synchronous={sync}"


# --- wrk ----------------------------------------------------------------------------------------------------------

ALERT = (
    '{"status":"firing","labels":{"alertname":"DatabaseLocked","service":"orders-db","severity":"critical",'
    '"bench":"%s"},"annotations":{"summary":"orders-db locked"},"startsAt":"2026-11-25T10:14:11.436741Z",'
    '"endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://example/probe","fingerprint":"3d799487cd717be8"}'
)
DELIVERY = (
    '{"receiver":"webhook","status":"firing","alerts":[%s],"groupLabels":{"alertname":"DatabaseLocked"},'
    '"commonLabels":{},"commonAnnotations":{},"externalURL":"http://vm:9093","version":"4",'
    '"groupKey":"{}:{alertname=\\"DatabaseLocked\\"}","truncatedAlerts":0}'
)
LUA = r"""
local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
local alert = [==[%(alert)s]==]
local delivery = [==[%(delivery)s]==]
local n, batch, tag, pace = 0, %(batch)d, "%(tag)s", %(pace)d
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local same = nil
function request()
  if tag == "" then
    if same == nil then
      local alerts = {}
      for j = 1, batch do alerts[j] = string.format(alert, "same") end
      same = wrk.format(nil, nil, nil, string.format(delivery, table.concat(alerts, ",")))
    end
    return same
  end
  n = n + 1
  local alerts = {}
  for j = 1, batch do alerts[j] = string.format(alert, tag .. "-" .. tid .. "-" .. n .. "-" .. j) end
  return wrk.format(nil, nil, nil, string.format(delivery, table.concat(alerts, ",")))
end
if pace > 0 then function delay() return pace end end
function done(summary, latency, requests)
  io.write(string.format('WRK {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
        found = shutil.which("wrk")
    return found


def wrk(
    url: str, *, connections: int, batch: int, new: bool, seconds: int = SECONDS, token: str = TOKEN, pace_ms: int = 0
) -> dict:
    tag = uuid.uuid4().hex[:8] if new else ""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        LUA % {"alert": ALERT, "delivery": DELIVERY, "batch": batch, "tag": tag, "token": token, "pace": pace_ms}
    )
    threads = str(min(2, connections))
    argv = [
        ensure_wrk(),
        "-t",
        threads,
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    finally:
        script.unlink()
    line = next(line for line in out.splitlines() if line.startswith("WRK "))
    raw = json.loads(line[4:])
    ok = raw["requests"] - raw["status_errors"]
    seconds_taken = raw["duration_us"] / 1e6
    return {
        "connections": connections,
        "alerts_per_request": batch,
        "requests": raw["requests"],
        "non_2xx": raw["status_errors"],
        "socket_errors": raw["socket_errors"],
        "alerts_per_s": round(ok * batch / seconds_taken, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "acknowledged_alerts": ok * batch,
    }


def paced(url: str, *, rate: int, seconds: int, connections: int = 16, token: str = TOKEN) -> dict:
    """New single-alert deliveries sent at ``rate`` per second in all (each connection on its own schedule,
    sending late ones at once), over keep-alive HTTP/1.1 connections: the load for the latency figure."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    tag = uuid.uuid4().hex[:8]
    interval = connections / rate
    results: list[tuple[int, float]] = []

    async def connection(index: int) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        loop = asyncio.get_running_loop()
        start = loop.time() + index * interval / connections
        n = 0
        while True:
            due = start + n * interval
            if due - start > seconds:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            body = (DELIVERY % (ALERT % f"{tag}-{index}-{n}")).encode()
            head = (
                f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            sent = loop.time()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            results.append((int(status_line.split()[1]), (loop.time() - sent) * 1000))
            n += 1
        writer.close()

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(connection(i) for i in range(connections)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    ok = [ms for status, ms in results if 200 <= status < 300]
    return {
        "connections": connections,
        "alerts_per_request": 1,
        "target_alerts_per_s": rate,
        "requests": len(results),
        "non_2xx": len(results) - len(ok),
        "alerts_per_s": round(len(ok) / elapsed, 1),
        "p50_ms": round(pct(ok, 0.5), 2),
        "p99_ms": round(pct(ok, 0.99), 2),
        "acknowledged_alerts": len(ok),
    }


# --- GRACE's side ---------------------------------------------------------------------------------------------------


def backlog() -> int:
    from django.db import connection

    from incidents.models import Delivery

    connection.close_if_unusable_or_obsolete()
    return Delivery.objects.exclude(status="done").count()


def drain(timeout: float = 600, *, stalled: float = 120) -> float:
    """Wait until every stored delivery is done; says how it goes every 30 s, and fails when the backlog has not
    moved for ``stalled`` seconds (a consumer stuck, or deliveries held by one that died: this run has no beat
    to take its lease back) or after ``timeout``."""
    started = changed = said = time.monotonic()
    last = None
    while left := backlog():
        now = time.monotonic()
        if left != last:
            last, changed = left, now
        if now - said >= 30:
            print(f"  draining: {left} deliveries not done after {now - started:.0f} s ({undone()})", flush=True)
            said = now
        if now - changed > stalled or now - started > timeout:
            raise RuntimeError(
                f"the intake backlog did not drain: {left} deliveries not done, unchanged for {now - changed:.0f} s "
                f"({undone()}); the consumers' log is {OUT}/ingest-*-worker.log"
            )
        time.sleep(0.2)
    return round(time.monotonic() - started, 1)


def undone() -> str:
    """The deliveries not done, by status: how many, under how many claims, the oldest received."""
    from django.db.models import Count, Min

    from incidents.models import Delivery

    rows = (
        Delivery.objects.exclude(status="done")
        .values("status")
        .annotate(n=Count("id"), claims=Count("claim", distinct=True), oldest=Min("received_at"))
        .order_by("status")
    )
    return "; ".join(
        f"{row['status']} {row['n']} under {row['claims']} claims, oldest received {row['oldest']:%H:%M:%S}"
        for row in rows
    )


def books(since_id: int) -> dict:
    """Stored alerts (of deliveries after ``since_id``) against the incidents' occurrences (all of them:
    every incident of a run comes from its deliveries)."""
    from django.db.models import Max, Sum

    from incidents.models import Delivery, Incident

    stored = Delivery.objects.filter(pk__gt=since_id).aggregate(alerts=Sum("alerts"), last=Max("pk"))
    return {
        "stored_alerts": stored["alerts"] or 0,
        "last_delivery": stored["last"] or since_id,
        "incidents": Incident.objects.count(),
        "occurrences": Incident.objects.aggregate(total=Sum("occurrences"))["total"] or 0,
    }


def latencies(since_id: int, *, window_s: int = 10) -> dict:
    """Accepted to processed, for the deliveries after ``since_id``: p50, p99, max, and the p99 of each
    ``window_s`` seconds of arrivals (whether it holds as the load goes on)."""
    from incidents.models import Delivery

    rows = Delivery.objects.filter(pk__gt=since_id, status="done").values_list("received_at", "processed_at")
    timed = [(received, (done - received).total_seconds() * 1000) for received, done in rows]
    values = [ms for _, ms in timed]
    windows: dict[int, list[float]] = {}
    if timed:
        start = min(received for received, _ in timed)
        for received, ms in timed:
            windows.setdefault(int((received - start).total_seconds() // window_s), []).append(ms)
    return {
        "deliveries": len(values),
        "p50_ms": round(pct(values, 0.5), 1),
        "p99_ms": round(pct(values, 0.99), 1),
        "max_ms": round(max(values, default=float("nan")), 1),
        f"p99_ms_per_{window_s}_s": [round(pct(windows[key], 0.99), 1) for key in sorted(windows)],
    }


def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_grace(label: str) -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    from incidents import defaults
    from incidents.models import Delivery, Incident

    ensure_database()
    call_command("migrate", "--noinput", verbosity=0)
    defaults.install()
    Delivery.objects.all().delete()
    if Incident.objects.exists():  # a database left from an earlier run: the books start from zero
        raise RuntimeError("the benchmark needs a database without incidents")
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    web_log, worker_log = OUT / f"ingest-{label}-web.log", OUT / f"ingest-{label}-worker.log"
    web, worker = start_grace(port, web_log, worker_log, name=f"bench-intake-{os.getpid()}")
    base = f"http://127.0.0.1:{port}"
    hook, floor = f"{base}/api/webhooks/alertmanager/", f"{base}/bench/baseline/"
    results: dict = {}
    checks: list[dict] = []
    try:
        wait_for_port(port, web, web_log)
        wrk(floor, connections=16, batch=1, new=False, seconds=2)  # warm up both paths
        wrk(hook, connections=16, batch=1, new=False, seconds=2)
        drain()
        scenarios = [
            ("baseline_single_16", floor, 16, 1, False),
            ("baseline_single_64", floor, 64, 1, False),
            ("single_new_16", hook, 16, 1, True),
            ("single_duplicate_16", hook, 16, 1, False),
            ("single_new_64", hook, 64, 1, True),
            ("single_duplicate_64", hook, 64, 1, False),
            ("baseline_batch100_16", floor, 16, 100, False),
            ("batch100_new_16", hook, 16, 100, True),
            ("batch100_duplicate_16", hook, 16, 100, False),
        ]
        scenarios = [row for row in scenarios if wanted(row[0])]
        mark = books(0)["last_delivery"]
        for name, url, connections, batch, new in scenarios:
            row = wrk(url, connections=connections, batch=batch, new=new)
            row["load_average"] = loadavg()
            if url == hook:
                row["drained_in_s"] = drain()
                book = books(mark)
                row["stored_alerts"] = book["stored_alerts"]
                row["to_incident"] = latencies(mark)
                mark = book["last_delivery"]
            results[name] = row
            print(
                f"  {label} {name}: {row['alerts_per_s']} alerts/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
                f" (load {row['load_average']})",
                flush=True,
            )
        # Alert accepted to incident visible, at a paced rate (16 connections, one alert each).
        if wanted("paced_single_new_16"):
            before = books(0)["last_delivery"]
            steady = paced(hook, rate=PACED_RATE, seconds=PACED_SECONDS)
            steady["drained_in_s"] = drain()
            steady["to_incident"] = latencies(before)
            steady["load_average"] = loadavg()
            results["paced_single_new_16"] = steady
            print(
                f"  {label} paced: {steady['alerts_per_s']} alerts/s, accepted to incident p50 "
                f"{steady['to_incident']['p50_ms']} ms p99 {steady['to_incident']['p99_ms']} ms over "
                f"{PACED_SECONDS} s (p99 of each 10 s: {steady['to_incident']['p99_ms_per_10_s']})",
                flush=True,
            )
        final = books(0)
        acknowledged = sum(row["acknowledged_alerts"] for row in results.values() if "stored_alerts" in row)
        acknowledged += results.get("paced_single_new_16", {}).get("acknowledged_alerts", 0)
        checks.append(
            {
                "acknowledged_by_wrk": acknowledged,
                "stored_alerts": final["stored_alerts"],
                "incidents": final["incidents"],
                "occurrences": final["occurrences"],
                "nothing_lost": final["occurrences"] == final["stored_alerts"] >= acknowledged,
            }
        )
    finally:
        stop(web)
        stop(worker)
    for name, row in results.items():
        if name.startswith("single") or name.startswith("paced"):
            row["vs_baseline"] = round(
                row["alerts_per_s"] / results[f"baseline_single_{row['connections']}"]["alerts_per_s"], 3
            )
        elif name.startswith("batch"):
            row["vs_baseline"] = round(row["alerts_per_s"] / results["baseline_batch100_16"]["alerts_per_s"], 3)
    return {"database": durability(), "results": results, "books": checks[-1] if checks else None}


# --- Ansible EDA's side -----------------------------------------------------------------------------------------


RULEBOOK = """---
- name: bench
  hosts: all
  sources:
    - eda.builtin.webhook:
        host: 127.0.0.1
        port: {port}
        token: {token}
  rules:
    - name: every alert
      condition: event.payload is defined
      action:
        debug:
"""


def eda_binary() -> tuple[Path | None, str]:
    """ansible-rulebook in a throwaway virtualenv under EDA_DIR (installed from PyPI when missing), or why not."""
    binary = EDA_DIR / "venv" / "bin" / "ansible-rulebook"
    java = shutil.which("java") or next(iter(sorted(Path("/usr/lib/jvm").glob("*/bin/java"))), None)
    if java is None:
        return None, "no Java runtime (apt-get install openjdk-17-jre-headless)"
    if not binary.exists():
        EDA_DIR.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(EDA_DIR / "venv")], check=True, capture_output=True)
            subprocess.run(
                [str(EDA_DIR / "venv/bin/pip"), "install", "-q", "ansible-rulebook==1.3.2", "ansible-core"],
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"ansible-rulebook could not be installed: {exc}"
    return binary, str(Path(java).resolve().parents[1])


def start_eda(binary: Path, java_home: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (EDA_DIR / "rulebook.yml").write_text(RULEBOOK.format(port=port, token=EDA_TOKEN))
    (EDA_DIR / "inventory.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    env = {**os.environ, "JAVA_HOME": java_home, "PATH": f"{binary.parent}:{os.environ['PATH']}"}
    log = OUT / "ingest-eda.log"
    proc = subprocess.Popen(
        [str(binary), "--rulebook", "rulebook.yml", "-i", "inventory.yml"],
        cwd=EDA_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    wait_for_port(port, proc, log)
    return proc, f"http://127.0.0.1:{port}/endpoint"


def start_grace(port: int, web_log: Path, worker_log: Path, *, name: str):
    """GRACE's web server (the light path in front of Django) on ``port`` and a Celery worker consuming ``intake``
    (the consumers), with the benchmark's webhook token and no backlog bound."""
    env = {**os.environ, "GRACE_WEBHOOK_TOKEN": TOKEN, "GRACE_INTAKE_MAX_BACKLOG": "10000000"}
    web = start(
        serve.command(
            port=port, workers=int(WEB_WORKERS), threads=int(WEB_THREADS), application="bench.bench_ingest:application"
        ),
        web_log,
        env,
    )
    worker = start(
        [
            str(ROOT / ".venv/bin/celery"),
            "-A",
            "grace_site",
            "worker",
            "-Q",
            "intake",
            "-c",
            CONSUMERS,
            "-n",
            f"{name}@localhost",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
        ],
        worker_log,
        env,
    )
    return web, worker


def run_side_by_side(binary: Path, java_home: str) -> dict:
    """Alternating rounds: GRACE's single new alerts at 16 connections, then EDA's webhook, ``EDA_ROUNDS`` times."""
    import django

    django.setup()
    port = free_port()
    web, worker = start_grace(
        port, OUT / "ingest-eda-grace-web.log", OUT / "ingest-eda-grace-worker.log", name=f"bench-eda-{os.getpid()}"
    )
    eda, eda_url = start_eda(binary, java_home)
    rounds = []
    try:
        wait_for_port(port, web, OUT / "ingest-eda-grace-web.log")
        hook = f"http://127.0.0.1:{port}/api/webhooks/alertmanager/"
        wrk(hook, connections=16, batch=1, new=False, seconds=2)
        wrk(eda_url, connections=16, batch=1, new=False, seconds=2, token=EDA_TOKEN)
        drain()
        for number in range(1, EDA_ROUNDS + 1):
            grace = wrk(hook, connections=16, batch=1, new=True)
            grace["load_average"] = loadavg()
            grace["drained_in_s"] = drain()
            time.sleep(2)
            ansible = wrk(eda_url, connections=16, batch=1, new=True, token=EDA_TOKEN)
            ansible["load_average"] = loadavg()
            ratio = round(grace["alerts_per_s"] / max(ansible["alerts_per_s"], 0.1), 2)
            rounds.append({"round": number, "grace": grace, "eda": ansible, "grace_vs_eda": ratio})
            print(
                f"  round {number}: GRACE {grace['alerts_per_s']}/s p99 {grace['p99_ms']} ms; "
                f"EDA {ansible['alerts_per_s']}/s p99 {ansible['p99_ms']} ms",
                flush=True,
            )
            time.sleep(2)
    finally:
        stop(eda)
        stop(web)
        stop(worker)
    return {"rounds": rounds}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        label = sys.argv[2]
        print(json.dumps(run_grace(label) if label != "eda" else run_side_by_side(*eda_binary())), flush=True)
        return
    ensure_wrk()
    OUT.mkdir(parents=True, exist_ok=True)
    summary: dict = {
        "cpus": os.cpu_count(),
        "web": f"granian {WEB_WORKERS} workers x {WEB_THREADS} threads",
        "consumers": int(CONSUMERS),
        "seconds_per_scenario": SECONDS,
        "paced_seconds": PACED_SECONDS,
        "runs": {},
    }
    wanted = os.environ.get("BENCH_INGEST_DATABASES", "postgresql,sqlite").split(",")
    databases = []
    if "postgresql" in wanted and os.environ.get("DATABASE_URL", "").startswith("postgres"):
        databases.append(("postgresql", os.environ["DATABASE_URL"]))
    scratch = Path(tempfile.mkdtemp(prefix="grace-bench-"))  # the SQLite run's database, removed afterwards
    if "sqlite" in wanted:
        databases.append(("sqlite", f"sqlite:///{scratch / 'bench.sqlite3'}"))
    try:
        for label, url in databases:
            print(f"--- {label}", flush=True)
            summary["runs"][label] = _child(label, url)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if os.environ.get("BENCH_EDA", "1") == "1":
        binary, why = eda_binary()
        if binary is None:
            summary["eda"] = {"skipped": why}
            print(f"--- EDA skipped: {why}", flush=True)
        else:
            print("--- GRACE and Ansible EDA, alternating rounds (PostgreSQL)", flush=True)
            summary["eda"] = _child("eda", databases[0][1] if databases else os.environ["DATABASE_URL"])
    (OUT / "ingest.json").write_text(json.dumps(summary, indent=2))
    report(summary)


def _child(label: str, url: str) -> dict:
    env = {**os.environ, "DATABASE_URL": url}
    proc = subprocess.run([sys.executable, __file__, "--one", label], env=env, cwd=ROOT, capture_output=True, text=True)
    sys.stdout.write("".join(line + "\n" for line in proc.stdout.splitlines()[:-1]))
    if proc.returncode != 0:
        raise RuntimeError(f"the {label} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def report(summary: dict) -> None:
    for label, run in summary["runs"].items():
        print(f"\n{label}: {run['database']}")
        print(f"{'scenario':24} {'alerts/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs base':>8} {'to incident ms':>16}")
        for name, row in run["results"].items():
            inc = row.get("to_incident")
            shown = f"{inc['p50_ms']}/{inc['p99_ms']}" if inc else ""
            print(
                f"{name:24} {row['alerts_per_s']:>10} {row['p50_ms']:>8} {row['p99_ms']:>8} "
                f"{row.get('vs_baseline', '')!s:>8} {shown:>16}"
            )
        books_ = run["books"]
        print(
            f"books: {books_['stored_alerts']} alerts stored (wrk counted {books_['acknowledged_by_wrk']} "
            f"acknowledged), {books_['incidents']} incidents with {books_['occurrences']} occurrences: "
            f"{'nothing lost' if books_['nothing_lost'] else 'MISMATCH'}"
        )
    eda = summary.get("eda")
    if eda and "rounds" in eda:
        print("\nGRACE (single new alerts, 16 connections) and Ansible EDA's webhook, alternating:")
        for r in eda["rounds"]:
            print(
                f"round {r['round']}: GRACE {r['grace']['alerts_per_s']}/s (p99 {r['grace']['p99_ms']} ms), "
                f"EDA {r['eda']['alerts_per_s']}/s (p99 {r['eda']['p99_ms']} ms): x{r['grace_vs_eda']}"
            )


if __name__ == "__main__":
    main()
