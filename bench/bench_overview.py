"""The overview page (the admin's home) with 10,000 heal runs in the database (`make bench`, or
`bash scripts/bench.sh bench/bench_overview.py`; `DATABASE_URL=sqlite:///...` for SQLite).

Fills the database that scripts/bench.sh provides with BENCH_OVERVIEW_RUNS heal runs (2,000 incidents with
five runs each: one still moving or waiting for approval on some, every other one finished, with its timeline and
outcome record, over the last ten days), pending approval requests, benchmark runs and sweep targets. Then it
renders GET /admin/ as a logged-in superuser through Django's test client (the whole request: middleware,
session, queries, template; no network), and in the same run a minimal admin page (the password change form:
the same frame with no query of GRACE's) as the baseline. Prints p50/p95 of both, their ratio and the absolute
figure, and writes var/bench/overview.json. PASS when the overview's p50 is under 100 ms.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from approvals.models import ApprovalRequest  # noqa: E402
from incidents import channels  # noqa: E402
from incidents.models import Incident, SweepTarget  # noqa: E402
from learning.models import BenchmarkResult, BenchmarkRun, BenchmarkSuite, OutcomeRecord  # noqa: E402
from remediation.choices import RunStatus  # noqa: E402
from remediation.models import HealRun, RunEvent  # noqa: E402

RUNS = int(os.environ.get("BENCH_OVERVIEW_RUNS", "10000"))
REQUESTS = int(os.environ.get("BENCH_OVERVIEW_REQUESTS", "60"))
WARMUP = 5
TARGET_MS = 100.0
S = RunStatus
FINAL = [S.SUCCEEDED] * 6 + [S.ESCALATED, S.ROLLED_BACK, S.BLOCKED, S.FAILED]
MOVING = [S.DIAGNOSED, S.PLANNED, S.EXECUTING, S.VERIFYING, S.AWAITING_APPROVAL]
OUTCOME = {
    S.SUCCEEDED: "succeeded",
    S.ESCALATED: "escalated",
    S.ROLLED_BACK: "rolled_back",
    S.BLOCKED: "blocked",
    S.FAILED: "failed",
}


def _ensure_database() -> None:
    if connection.vendor != "postgresql":
        return
    import psycopg
    from psycopg import sql

    params = connection.get_connection_params()
    name = params.pop("dbname")
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def populate(now) -> None:
    """RUNS runs over 2,000 incidents, their timelines and outcomes, approvals, benchmarks, sweeps."""
    channel = channels.builtin(channels.USERS)
    per_incident = 5
    incidents = []
    for i in range(RUNS // per_incident):
        seen = now - timedelta(minutes=7 * i % (10 * 24 * 60))
        incidents.append(
            Incident(
                fingerprint=f"bench-{i}",
                channel=channel,
                source="api",
                service=f"svc-{i % 40}",
                environment="staging",
                title=f"svc-{i % 40}: WAL is {i % 9 + 1} MiB",
                first_seen=seen,
                last_seen=seen,
                status="healing" if i % 50 == 0 else ("escalated" if i % 7 == 0 else "resolved"),
                diagnosis_code="database_wal_bloat",
            )
        )
    with transaction.atomic():
        Incident.objects.bulk_create(incidents, batch_size=1000)
    incidents = list(Incident.objects.filter(fingerprint__startswith="bench-").order_by("pk"))
    runs = []
    for n, incident in enumerate(incidents):
        for k in range(per_incident):
            live = k == per_incident - 1 and incident.status == "healing"
            status = MOVING[n % len(MOVING)] if live else FINAL[(n + k) % len(FINAL)]
            finished = incident.first_seen + timedelta(seconds=k * 30)
            runs.append(
                HealRun(
                    incident=incident,
                    status=status,
                    diagnosis_code="database_wal_bloat",
                    tier=1 + (n % 3 == 0),
                    target=f"local:/srv/{incident.service}.sqlite3",
                    family="local",
                    finished_at=None if live else finished,
                    status_reason="contract met",
                )
            )
    with transaction.atomic():
        HealRun.objects.bulk_create(runs, batch_size=1000)
    runs = list(HealRun.objects.select_related("incident").order_by("pk"))
    with transaction.atomic():
        events, outcomes = [], []
        for run in runs:
            for old, new in [
                ("", S.RECEIVED),
                (S.RECEIVED, S.DIAGNOSED),
                (S.DIAGNOSED, S.PLANNED),
                (S.PLANNED, S.APPROVED),
                (S.APPROVED, run.status),
            ]:
                events.append(RunEvent(run=run, from_status=old, to_status=new, note="bench"))
            if run.status in OUTCOME:
                finished = run.incident.first_seen + timedelta(seconds=2)
                outcomes.append(
                    OutcomeRecord(
                        run=run,
                        incident=run.incident,
                        diagnosis_code=run.diagnosis_code,
                        playbook="sqlite-wal-checkpoint",
                        service=run.incident.service,
                        target=run.target,
                        tier=run.tier,
                        outcome=OUTCOME[run.status],
                        counted=run.status in (S.SUCCEEDED, S.ROLLED_BACK, S.FAILED),
                        started_at=run.incident.first_seen,
                        finished_at=finished,
                        duration_seconds=2.0,
                        resolve_seconds=2.0,
                    )
                )
        RunEvent.objects.bulk_create(events, batch_size=2000)
        OutcomeRecord.objects.bulk_create(outcomes, batch_size=1000)
        waiting = [r for r in runs if r.status == S.AWAITING_APPROVAL]
        ApprovalRequest.objects.bulk_create(
            ApprovalRequest(
                run=r,
                plan_hash="0" * 64,
                tier=2,
                required_approvals=1,
                expires_at=now + timedelta(hours=1),
                context={"service": r.incident.service, "diagnosis": r.diagnosis_code},
            )
            for r in waiting
        )
        suite, _ = BenchmarkSuite.objects.get_or_create(name="smoke", defaults={"checks": [{"kind": "redis"}]})
        for i in range(200):
            bench = BenchmarkRun.objects.create(suite=suite, status="passed", finished_at=now, duration_ms=20.0 + i % 7)
            BenchmarkResult.objects.create(
                run=bench,
                suite=suite,
                check_kind="redis",
                metric="redis.roundtrip_ms",
                ok=True,
                value=0.6 + (i % 5) / 10,
            )
        for i in range(5):
            SweepTarget.objects.get_or_create(name=f"bench-host-{i}", defaults={"kind": "host"})


def _time(client: Client, path: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"GET {path} answered {response.status_code}")
    return samples


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    _ensure_database()
    call_command("migrate", verbosity=0)
    call_command("grace_setup", verbosity=0, stdout=open(os.devnull, "w"))  # noqa: SIM115 - the shipped rows
    now = timezone.now()
    if HealRun.objects.count() < RUNS:
        started = time.perf_counter()
        populate(now)
        print(f"filled the database in {time.perf_counter() - started:.1f} s")
    user = get_user_model().objects.filter(is_superuser=True).first()
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    _time(client, "/admin/", WARMUP)
    _time(client, "/admin/password_change/", WARMUP)
    overview, baseline = [], []
    for _ in range(REQUESTS):  # interleaved: both see the same moments of a shared machine
        overview += _time(client, "/admin/", 1)
        baseline += _time(client, "/admin/password_change/", 1)
    runs = HealRun.objects.count()
    p50, p95, b50 = _p(overview, 50), _p(overview, 95), _p(baseline, 50)
    print(f"overview with {runs} heal runs, database {connection.vendor}, {REQUESTS} requests after {WARMUP} warm-up")
    print(f"baseline: admin password form  p50 {b50:7.1f} ms   p95 {_p(baseline, 95):7.1f} ms")
    print(f"overview: /admin/               p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   x {p50 / b50:.2f} of baseline p50")
    verdict = "PASS" if p50 < TARGET_MS else "FAIL"
    print(f"{verdict}: overview p50 {p50:.1f} ms (target < {TARGET_MS:.0f} ms)")
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "overview.json").write_text(
        json.dumps(
            {
                "runs": runs,
                "database": connection.vendor,
                "requests": REQUESTS,
                "overview_ms": {"p50": p50, "p95": p95, "mean": statistics.fmean(overview)},
                "baseline_ms": {"p50": b50, "p95": _p(baseline, 95)},
                "ratio_p50": p50 / b50,
                "target_ms": TARGET_MS,
            },
            indent=2,
        )
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
