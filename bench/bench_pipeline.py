"""Tier-1 heal end to end, beside a Celery chain of the same length, measured in the same run.

- latency: one incident at a time, posted to the API (granian on loopback) until
  its run's SUCCEEDED timeline entry, with a fast local action (sqlite.analyze on a
  small database) and its contract; p50/p99 over N runs.
- baseline: a chain of 6 no-op tasks (`grace.ping`) on the same worker, one at a
  time, the same number of times. 6 = the stages a tier-1 run passes through until
  SUCCEEDED (start, plan, gate, snapshot, execute, verify).
- audited floor: a chain of 6 `bench.audited_step` tasks (bench/floor_tasks.py), each doing
  only what every stage must: read the run and make one audited transition. The difference
  between the two chains is what the durable, audited state machine costs; the rest of the
  tier-1 time is the stages' own work (planning, policy, snapshot, action, contract) and HTTP.
- throughput: M incidents posted at once; runs finished per second.

The three are measured in rounds (one no-op chain, one audited chain, one incident), so noise on
the shared machine falls on all of them alike. Runs go one at a time: the next incident is posted
once the previous run has also recorded
its outcome (the incident is resolved). The SUCCEEDED time is the timeline row's own
timestamp, so how often the benchmark polls does not change what is measured; it polls
every 10 ms (BENCH_POLL_S) so its own queries do not compete with the worker.

Run with `make bench` (or `bash scripts/bench.sh bench/bench_pipeline.py`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")
django.setup()

import requests  # noqa: E402
from celery import chain  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from approvals import tokens  # noqa: E402
from approvals.models import ApiToken  # noqa: E402
from bench.floor_tasks import audited_step  # noqa: E402
from grace_site import serve  # noqa: E402
from grace_site.celery import app  # noqa: E402
from grace_site.tasks import ping  # noqa: E402
from incidents.models import DiagnosisRule, Incident, Resource, Service  # noqa: E402
from remediation.models import HealRun, Playbook, RunEvent  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "200"))
POLL_S = float(os.environ.get("BENCH_POLL_S", "0.01"))
BURST = int(os.environ.get("BENCH_BURST", "100"))
ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def start(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115


def stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def setup() -> tuple[str, Path]:
    call_command("migrate", "--noinput", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_superuser": True, "is_staff": True}
    )
    ApiToken.objects.filter(user=user, name="bench").delete()
    _, key = tokens.issue(user, name="bench", actor="system:bench")
    root = Path(settings.GRACE_ALLOWED_ROOTS[0])
    root.mkdir(parents=True, exist_ok=True)
    # One small database per incident: independent targets, as independent incidents would have
    # (a single target would rightly hit its per-target rate limit and hourly budget).
    db = root / "bench"
    db.mkdir(exist_ok=True)
    for i in [*range(-10, 0), *range(RUNS), *range(100000, 100000 + BURST)]:  # warm-up, latency, burst
        path = db / f"db{i}.sqlite3"
        # Each bench service and its database are in the inventory, as a user's would be.
        service, _ = Service.objects.get_or_create(name=f"bench-{i}", defaults={"environment": "bench"})
        Resource.objects.get_or_create(service=service, name="db", defaults={"kind": "sqlite", "target": str(path)})
        if path.exists():
            continue
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany("INSERT INTO t (v) VALUES (?)", (("x",) for _ in range(100)))
    DiagnosisRule.objects.update_or_create(
        name="bench: probe",
        defaults={
            "code": "bench_probe",
            "position": 1,
            "enabled": True,
            "title_regex": r"^bench probe",
            "confidence": 0.99,
        },
    )
    Playbook.objects.update_or_create(
        name="bench-analyze",
        defaults={
            "diagnosis_codes": ["bench_probe"],
            "tier": 1,
            "cooldown_seconds": 0,
            "enabled": True,
            "steps": [{"action": "sqlite.analyze", "contract": [{"field": "integrity", "op": "==", "value": "ok"}]}],
        },
    )
    return key, db


def post(session: requests.Session, url: str, token: str, i: int, db: Path) -> tuple[int, float]:
    t0 = time.time()
    r = session.post(
        f"{url}/api/incidents/?wait=true",  # the synchronous mode: the answer is the incident
        json={"service": f"bench-{i}", "title": f"bench probe {i} {t0}", "severity": "warning"},
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()["id"], t0


def succeeded_at(incident_id: int, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = (
            RunEvent.objects.filter(
                run__incident_id=incident_id,
                to_status__in=["SUCCEEDED", "FAILED", "ESCALATED", "BLOCKED", "ROLLED_BACK"],
            )
            .values_list("to_status", "at", "run__status_reason")
            .first()
        )
        if ev:
            if ev[0] != "SUCCEEDED":
                raise RuntimeError(f"incident {incident_id}: run ended {ev[0]}: {ev[2]}")
            return ev[1].timestamp()
        time.sleep(POLL_S)
    incident = Incident.objects.get(pk=incident_id)
    runs = list(HealRun.objects.filter(incident_id=incident_id).values_list("pk", "status"))
    raise RuntimeError(
        f"incident {incident_id} ({incident.status}, diagnosis {incident.diagnosis_code}): "
        f"no finished run after {timeout} s; runs: {runs or 'none'}"
    )


def settle(incident_id: int, timeout: float = 60) -> None:
    """Wait until the run's outcome is recorded (the incident resolved), so runs never overlap."""
    deadline = time.monotonic() + timeout
    while Incident.objects.filter(pk=incident_id).values_list("status", flat=True).get() != "resolved":
        if time.monotonic() > deadline:
            raise RuntimeError(f"incident {incident_id}: not resolved {timeout} s after its run succeeded")
        time.sleep(POLL_S)


def floor_run() -> int:
    """A run for the audited floor chain to flip between two non-terminal states."""
    now = timezone.now()
    incident = Incident.objects.create(
        fingerprint=f"bench-floor-{os.getpid()}-{time.time()}",
        source="api",
        title="benchmark floor",
        first_seen=now,
        last_seen=now,
        status="healing",
    )
    return HealRun.objects.create(incident=incident, status="PLANNED").pk


def main() -> None:
    token, db = setup()
    tmp = Path(settings.VAR_DIR) / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    # Start from an idle broker: tasks another benchmark published (bench_ingest hands thousands of
    # incidents to a pipeline it never runs) would otherwise queue ahead of every run measured here.
    with app.connection_for_write() as conn:
        dropped = sum(conn.default_channel.queue_purge(q.name) or 0 for q in app.conf.task_queues)
    if dropped:
        print(f"dropped {dropped} queued task(s) left by earlier work on this broker")
    port = 18000 + os.getpid() % 1000
    env_worker = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "grace_site",
        "worker",
        "-Q",
        "heal.local,heal.cloud,sweeps,benchmarks,default",
        "-c",
        "2",
        "-n",
        f"bench-{os.getpid()}@localhost",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "warning",
        "--include",
        "bench.floor_tasks",
    ]
    worker = start(env_worker, tmp / "worker.log")
    web = start(
        serve.command(port=port, workers=2, threads=4),
        tmp / "web.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not start")
        session = requests.Session()
        while True:
            try:
                session.get(f"{url}/api/health/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        floor_id = floor_run()
        # warm up every path
        for i in range(5):
            ping.apply_async().get(timeout=10)
            audited_step.apply_async(args=[floor_id]).get(timeout=10)
            iid, _ = post(session, url, token, -i - 1, db)
            succeeded_at(iid)
            settle(iid)

        def timed_chain(signature) -> float:
            t0 = time.perf_counter()
            chain(*(signature for _ in range(6))).apply_async().get(timeout=30)
            return (time.perf_counter() - t0) * 1000

        # Interleaved, one of each per round, so a noisy spell on the shared machine weighs on the
        # baseline, the floor and the pipeline alike and the ratios stay comparable.
        chain_ms, floor_ms, e2e_ms = [], [], []
        latency_from = timezone.now()
        for i in range(RUNS):
            chain_ms.append(timed_chain(ping.si()))
            floor_ms.append(timed_chain(audited_step.si(floor_id)))
            iid, t0 = post(session, url, token, i, db)
            e2e_ms.append((succeeded_at(iid) - t0) * 1000)
            settle(iid)

        t0 = time.time()
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(lambda i: post(requests.Session(), url, token, 100000 + i, db)[0], range(BURST)))
        last = max(succeeded_at(i, timeout=300) for i in ids)
        burst_s = last - t0
    finally:
        stop(web)
        stop(worker)

    # Where the time goes: the gap before each timeline entry of the latency runs, p50 per entry.
    gaps: dict[str, list[float]] = {}
    latency_runs = HealRun.objects.filter(
        playbook__name="bench-analyze",
        incident__service__in=[f"bench-{i}" for i in range(RUNS)],
        incident__created_at__gte=latency_from,
    ).select_related("incident")
    for run in latency_runs.prefetch_related("events"):
        events = [e for e in run.events.all() if e.to_status]
        created = run.incident.created_at
        previous = created
        for e in events:
            gaps.setdefault(e.to_status, []).append((e.at - previous).total_seconds() * 1000)
            previous = e.at
    result = {
        "stage_gap_p50_ms": {k: round(pct(v, 0.5), 1) for k, v in gaps.items()},
        "runs": RUNS,
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "tier1_e2e_ms": {
            "p50": round(pct(e2e_ms, 0.5), 1),
            "p99": round(pct(e2e_ms, 0.99), 1),
            "mean": round(statistics.mean(e2e_ms), 1),
        },
        "celery_chain6_ms": {"p50": round(pct(chain_ms, 0.5), 1), "p99": round(pct(chain_ms, 0.99), 1)},
        "ratio_p50": round(pct(e2e_ms, 0.5) / pct(chain_ms, 0.5), 2),
        "audited_chain6_ms": {"p50": round(pct(floor_ms, 0.5), 1), "p99": round(pct(floor_ms, 0.99), 1)},
        "ratio_p50_vs_audited_chain": round(pct(e2e_ms, 0.5) / pct(floor_ms, 0.5), 2),
        "burst": {"incidents": BURST, "seconds": round(burst_s, 2), "runs_per_s": round(BURST / burst_s, 1)},
        "succeeded_runs": HealRun.objects.filter(status="SUCCEEDED", playbook__name="bench-analyze").count(),
    }
    print(json.dumps(result, indent=2))
    (ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)  # beside the checkout: tmp goes with the services
    (ROOT / "var" / "bench" / "pipeline.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
