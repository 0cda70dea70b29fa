"""A console full of real records, for the admin page tests and the 1,400 px browser test.

The heal runs go through the real pipeline in this process (start, plan, gate, snapshot, execute, verify, record
the outcome: the same functions the Celery tasks call), against real SQLite files: a healed WAL, a run waiting for
a two-person approval, an escalation for a missing inventory resource, an escalation with evidence, a run blocked
by its cooldown. Benchmark results go through the real judgement with measured values chosen here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from approvals import audit, checkpoints, tokens
from approvals import defaults as approval_defaults
from approvals.models import ApprovalRequest, GovernanceSettings, NotificationChannel
from grace_site.handoff import host_queue
from incidents import channels, sweeps
from incidents import defaults as incident_defaults
from incidents.models import Incident, SweepTarget
from incidents.services import Signal, ingest
from learning import benchmarks
from learning.checks import Measurement, Metric
from learning.choices import BenchmarkRunStatus
from learning.models import BenchmarkRun, BenchmarkSuite
from remediation import defaults, execution, fleet, lifecycle, pipeline
from remediation.choices import RunStatus
from remediation.models import HealRun
from remediation.services import transition
from tests.support import inventory
from tests.support.runs import bloated_wal_db

S = RunStatus


@dataclass
class Console:
    healed: HealRun
    waiting: HealRun
    request: ApprovalRequest
    missing: HealRun
    evidence: HealRun
    blocked: HealRun
    incident: Incident
    benchmark: BenchmarkRun


def drive(run_id: int) -> HealRun:
    """Move a run through every stage in this process, as the workers would, until it stops."""
    for _ in range(12):
        run = HealRun.objects.get(pk=run_id)
        if run.status == S.DIAGNOSED:
            pipeline.plan(run.pk)
        elif run.status == S.PLANNED:
            pipeline.gate(run.pk)
        elif run.status == S.APPROVED:
            execution.take_snapshots(run)
        elif run.status == S.SNAPSHOTTED:
            transition(run.pk, S.SNAPSHOTTED, S.EXECUTING, note="executing", advance=False)
            execution.execute(HealRun.objects.get(pk=run.pk))
        elif run.status == S.VERIFYING:
            execution.verify(run)
        elif run.status == S.ROLLING_BACK:
            execution.rollback(run)
        else:
            break
    run = HealRun.objects.get(pk=run_id)
    if run.status in S.TERMINAL:
        lifecycle.record_outcome(run.pk)
    return run


def _heal(title: str, service: str, *, environment: str = "", **labels) -> HealRun:
    signal = Signal(source="api", title=title, service=service, environment=environment, labels=labels)
    incident = ingest(signal).incident
    return drive(pipeline.start_run(incident.pk).pk)


def _benchmarks() -> BenchmarkRun:
    """A suite whose Redis round trip is steady for 20 runs, then three times slower for three: over the
    threshold twice, then a regression (k = 3 of the last 5)."""
    suite, _ = BenchmarkSuite.objects.get_or_create(
        name="console-smoke", defaults={"checks": [{"kind": "database", "params": {}}, {"kind": "redis", "params": {}}]}
    )
    redis_metric, db_metric = Metric("redis.roundtrip_ms", floor=0.5), Metric("database.roundtrip_ms", floor=0.5)
    values = [0.62, 0.58, 0.66, 0.7, 0.61, 0.64, 0.59, 0.63, 0.6, 0.65] * 2 + [2.4, 2.2, 2.6]
    run = None
    for i, value in enumerate(values):
        run = BenchmarkRun.objects.create(suite=suite, trigger="schedule", status=BenchmarkRunStatus.RUNNING)
        measured = [
            (db_metric, "database", Measurement(db_metric, 0.21 + (i % 3) * 0.013, {"vendor": "test"}), ""),
            (redis_metric, "redis", Measurement(redis_metric, value), ""),
        ]
        results = benchmarks._finish(run, measured, 1.7 + value)
        benchmarks._after(run, results)
    return run


def populate(tmp_root: Path, *, user=None) -> Console:
    """Every kind of record the console shows; ``tmp_root`` must lie under GRACE_ALLOWED_ROOTS."""
    incident_defaults.install()
    defaults.install()
    approval_defaults.install()
    GovernanceSettings.objects.get_or_create(pk=1)
    NotificationChannel.objects.get_or_create(
        name="oncall-mail", defaults={"kind": "email", "recipients": ["oncall@example.com"]}
    )
    user = user or get_user_model().objects.filter(is_superuser=True).first()
    if user is not None and not user.api_tokens.filter(name="console-laptop").exists():
        tokens.issue(user, name="console-laptop", actor="test")
    channel, _ = inventory.channel(f"console-alerts-{uuid.uuid4().hex[:6]}", kind="alertmanager", source="alertmanager")

    # A healed WAL (tier 1) and, on a service whose tier floor is 3, the same remedy waiting for two approvers.
    orders = tmp_root / "orders.sqlite3"
    keepers = [bloated_wal_db(orders, rows=1500)]
    inventory.resource("orders-db", "sqlite", orders, name="db", environment="staging")
    billing = tmp_root / "billing.sqlite3"
    keepers.append(bloated_wal_db(billing, rows=600))
    inventory.resource("billing-db", "sqlite", billing, name="db", environment="production", tier_floor=3)
    healed = _heal("orders-db: SQLite WAL is 1.6 MiB", "orders-db", alertname="SQLiteWALBloat", resource="db")
    waiting = _heal(
        "billing-db: SQLite WAL is 0.7 MiB", "billing-db", alertname="SQLiteWALBloat", environment="staging"
    )
    blocked = _heal("orders-db: SQLite WAL grows again", "orders-db", alertname="SQLiteWALBloat", resource="db")

    # No resource the remedies of database_locked need; and busy CPU, handed over with the busiest processes.
    inventory.resource("search", "http", f"http://127.0.0.1:{settings.GRACE_PORT}/api/health/", name="health")
    missing = _heal("search: database is locked", "search", alertname="DatabaseLocked")
    inventory.service("grace", environment="production", tier_floor=2)
    evidence = _heal("grace: CPU 97% busy", "grace", alertname="HighCPU")

    # An unknown signal (escalated at intake), an ordinary open one, and a host sweep's pending breach.
    ingest(Signal(source="api", title="Something odd happened", service="orders-db", environment="prod"))
    only_cpu = {"cpu_percent": 0, "disk_used_percent": 101, "memory_used_percent": 101, "load_per_cpu": 1e6}
    SweepTarget.objects.get_or_create(name="console-host", defaults={"kind": "host", "thresholds": only_cpu})
    sweeps.sweep("host")
    bench = _benchmarks()
    channels.issue_token(channel, actor="test")
    # This host's agent, a delivery parked after its tries, and a signed checkpoint of the sealed log.
    fleet.register(f"console@{settings.GRACE_HOST}", queues=["heal.local", host_queue(settings.GRACE_HOST)])
    error = "OperationalError: could not serialize access"
    inventory.parked_delivery(channel, '{"alerts": []}', kind="alertmanager", alerts=0, error=error)
    audit.seal()
    checkpoints.issue(requested_by="test")
    for keeper in keepers:
        keeper.close()
    request = ApprovalRequest.objects.get(run=waiting, status="pending")
    return Console(healed, waiting, request, missing, evidence, blocked, healed.incident, bench)
