"""Health sweeps: check hosts, SQLite and PostgreSQL databases and HTTP endpoints against their thresholds.

Each check yields findings; a breach opens (or bumps) an incident through the same intake service as every
other signal, with a fingerprint per (target, check) so repeated sweeps dedupe. A check that passes again
resolves the active sweep incident it had opened.

Host checks (CPU, memory, load, disk) are noisy on a busy machine, GRACE's own included: a host breach counts
only when it persists, in at least ``GRACE_SWEEP_PERSIST_K`` of the last ``GRACE_SWEEP_PERSIST_N`` sweeps of the
target, and its incident is resolved once fewer than K of the last N breach. The last N outcomes of each check
are kept in the target's ``last_result["recent"]``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from grace_site.masking import redact_text, redact_url
from incidents import channels, normalize, services
from incidents.choices import Source, SweepKind
from incidents.models import SweepTarget
from incidents.services import Signal

logger = logging.getLogger(__name__)


@dataclass
class Finding:
    """One check of one target: ``breached`` when over its threshold."""

    check: str
    breached: bool
    title: str
    labels: dict = field(default_factory=dict)
    message: str = ""


def check_host(target: SweepTarget) -> list[Finding]:
    disk_path = target.location or "/"
    disk = psutil.disk_usage(disk_path)
    memory = psutil.virtual_memory()
    cpu = psutil.cpu_percent(interval=0.2)
    load_per_cpu = os.getloadavg()[0] / (psutil.cpu_count() or 1)
    measures = [
        ("disk", "disk_used_percent", disk.percent, f"disk {disk_path} {disk.percent:.0f}% used", {"path": disk_path}),
        ("memory", "memory_used_percent", memory.percent, f"memory {memory.percent:.0f}% used", {}),
        ("cpu", "cpu_percent", cpu, f"CPU {cpu:.0f}% busy", {}),
        ("load", "load_per_cpu", load_per_cpu, f"load {load_per_cpu:.2f} per CPU", {}),
    ]
    findings = []
    for check, key, value, title, extra in measures:
        limit = target.threshold(key)
        labels = {key: f"{value:.2f}", "threshold": str(limit), **extra}
        findings.append(Finding(check, value >= limit, f"{target.service_name}: {title}", labels))
    return findings


def _wal_bytes(db_path: Path) -> int:
    wal = db_path.with_name(db_path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def check_sqlite(target: SweepTarget) -> list[Finding]:
    db_path = Path(target.address)
    if not db_path.is_file():
        return [
            Finding(
                "sqlite_missing",
                True,
                f"{target.service_name}: SQLite file {db_path} is missing",
                {"db_path": str(db_path)},
            )
        ]
    wal_bytes = _wal_bytes(db_path)
    wal_limit = int(target.threshold("wal_bytes"))
    findings = [
        Finding(
            "sqlite_wal",
            wal_bytes > wal_limit,
            f"{target.service_name}: SQLite WAL is {wal_bytes} bytes (threshold {wal_limit})",
            {"db_path": str(db_path), "wal_bytes": str(wal_bytes), "threshold": str(wal_limit)},
        )
    ]
    timeout_ms = int(target.threshold("busy_timeout_ms"))
    busy = False
    detail = ""
    # Read-write open without creating anything; BEGIN IMMEDIATE asks for the write lock and gives it back.
    connection = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, timeout=timeout_ms / 1000, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        busy, detail = "locked" in str(exc) or "busy" in str(exc), str(exc)
        if not busy:
            raise
    finally:
        connection.close()
    findings.append(
        Finding(
            "sqlite_busy",
            busy,
            f"{target.service_name}: SQLite database is locked (write lock not granted within {timeout_ms} ms)",
            {"db_path": str(db_path), "busy_timeout_ms": str(timeout_ms)},
            detail,
        )
    )
    return findings


LONG_TRANSACTIONS_SQL = """
    SELECT count(*), coalesce(max(extract(epoch FROM now() - xact_start)), 0)
    FROM pg_stat_activity
    WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND now() - xact_start > make_interval(secs => %s)
"""
BLOCKED_SQL = "SELECT count(*) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0"


def check_postgres(target: SweepTarget) -> list[Finding]:
    long_limit = float(target.threshold("long_transaction_seconds"))
    blocked_limit = int(target.threshold("blocked_locks"))
    timeout = int(target.threshold("connect_timeout_seconds")) or 5
    try:
        connection = psycopg.connect(
            target.location, connect_timeout=timeout, autocommit=True, application_name="grace-sweep"
        )
    except psycopg.OperationalError as exc:
        error = redact_text(str(exc))[:500]
        return [Finding("postgres_down", True, f"{target.service_name}: PostgreSQL is unreachable", {}, error)]
    with connection:
        connection.execute("SET statement_timeout = 5000")
        long_count, oldest = connection.execute(LONG_TRANSACTIONS_SQL, [long_limit]).fetchone()
        (blocked,) = connection.execute(BLOCKED_SQL).fetchone()
    return [
        Finding("postgres_down", False, f"{target.service_name}: PostgreSQL is reachable"),
        Finding(
            "pg_long_transaction",
            long_count > 0,
            f"{target.service_name}: {long_count} transaction(s) open longer than {long_limit:.0f} s",
            {
                "long_transactions": str(long_count),
                "oldest_seconds": f"{float(oldest):.1f}",
                "threshold": str(long_limit),
            },
        ),
        Finding(
            "pg_blocked_locks",
            blocked >= blocked_limit,
            f"{target.service_name}: {blocked} session(s) waiting on locks",
            {"blocked_sessions": str(blocked), "threshold": str(blocked_limit)},
        ),
    ]


def check_postgres_breaches(target: SweepTarget) -> list[str]:
    """The checks of a PostgreSQL target that are over threshold right now (nothing is recorded)."""
    return [finding.check for finding in check_postgres(target) if finding.breached]


def check_http(target: SweepTarget) -> list[Finding]:
    expected = int(target.threshold("expected_status"))
    latency_limit = float(target.threshold("latency_ms"))
    timeout = float(target.threshold("timeout_seconds")) or 5.0
    shown = redact_url(target.address)  # a password or token in the URL never reaches an incident
    started = time.perf_counter()
    try:
        response = requests.get(target.address, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        error = redact_text(str(exc))[:500]
        return [
            Finding(
                "http_status",
                True,
                f"{target.service_name}: {shown} is unreachable",
                {"url": shown, "error": type(exc).__name__},
                error,
            )
        ]
    latency_ms = (time.perf_counter() - started) * 1000
    return [
        Finding(
            "http_status",
            response.status_code != expected,
            f"{target.service_name}: {shown} answered {response.status_code} (expected {expected})",
            {"url": shown, "status": str(response.status_code), "expected_status": str(expected)},
        ),
        Finding(
            "http_latency",
            latency_ms > latency_limit,
            f"{target.service_name}: {shown} took {latency_ms:.0f} ms (threshold {latency_limit:.0f})",
            {"url": shown, "latency_ms": f"{latency_ms:.1f}", "threshold": str(latency_limit)},
        ),
    ]


CHECKS = {
    SweepKind.HOST: check_host,
    SweepKind.SQLITE: check_sqlite,
    SweepKind.POSTGRES: check_postgres,
    SweepKind.HTTP: check_http,
}


def finding_fingerprint(target: SweepTarget, check: str) -> str:
    return normalize.compute_fingerprint(Source.SWEEP, target.kind, target.name, check)


def _persisted(target: SweepTarget, findings: list[Finding]) -> tuple[dict[str, str], dict[str, bool]]:
    """For a host target: each check's last N outcomes ("1" breached, "0" not, newest last) with this sweep's,
    and whether the check counts as breaching now (K of N); other kinds count every breach at once.
    Reads the stored history under a row lock, so concurrent sweeps of one target do not lose an outcome."""
    if target.kind != SweepKind.HOST:
        return {}, {finding.check: finding.breached for finding in findings}
    stored = SweepTarget.objects.select_for_update().filter(pk=target.pk).values_list("last_result", flat=True).first()
    before = (stored or {}).get("recent") or {}
    n, k = settings.GRACE_SWEEP_PERSIST_N, settings.GRACE_SWEEP_PERSIST_K
    recent = {f.check: (str(before.get(f.check, "")) + ("1" if f.breached else "0"))[-n:] for f in findings}
    return recent, {check: outcomes.count("1") >= k for check, outcomes in recent.items()}


def apply_findings(target: SweepTarget, findings: list[Finding]) -> dict:
    """Open or bump an incident per breach that counts; resolve the incident of a check that no longer breaches."""
    opened, resolved, pending = [], [], []
    # The resource the finding is about, by name: what a playbook step of its service selects.
    resource = {"resource": target.resource.name} if target.resource is not None else {}
    with transaction.atomic():
        recent, counts = _persisted(target, findings)
        for finding in findings:
            fingerprint = finding_fingerprint(target, finding.check)
            if finding.breached and not counts[finding.check]:
                pending.append(finding.check)  # breached, not (yet) in K of the last N sweeps
                continue
            if counts[finding.check] and not finding.breached:
                continue  # back within threshold this once: the incident stays until fewer than K of N breach
            if finding.breached:
                signal = Signal(
                    source=Source.SWEEP,
                    title=finding.title,
                    service=target.service_name,
                    message=finding.message,
                    severity=target.severity,
                    environment=target.environment,
                    labels={"check": finding.check, "sweep_target": target.name, **resource, **finding.labels},
                    fingerprint=fingerprint,
                    raw={"target": target.pk, "kind": target.kind, "check": finding.check, "labels": finding.labels},
                )
                opened.append(services.ingest(signal, actor="system:sweep").incident.pk)
                continue
            incident_id = services.active_incident_id(channels.builtin(channels.SWEEPS).pk, fingerprint)
            if incident_id is not None and services.resolve(
                incident_id, actor="system:sweep", reason=f"sweep: {finding.title} (back within threshold)"
            ):
                resolved.append(incident_id)
        result = {
            "breaches": [finding.check for finding in findings if finding.breached],
            "incidents": opened,
            "resolved": resolved,
        }
        if recent:
            result.update(pending=pending, recent=recent)
        SweepTarget.objects.filter(pk=target.pk).update(last_checked_at=timezone.now(), last_result=result)
    return result


def sweep_target(target: SweepTarget) -> dict:
    """Run one target's checks and apply the result. A check that cannot run is itself a breach."""
    try:
        findings = CHECKS[target.kind](target)
    except (OSError, sqlite3.Error, psycopg.Error) as exc:
        findings = [
            Finding(
                f"{target.kind}_check_failed",
                True,
                f"{target.service_name}: {target.kind} check failed",
                {"error": type(exc).__name__},
                str(exc)[:500],
            )
        ]
    return apply_findings(target, findings)


def sweep(kind: str) -> dict[str, dict]:
    """Sweep every enabled target of one kind; one target's failure never stops the others."""
    targets = SweepTarget.objects.filter(kind=kind, enabled=True).select_related("resource__service")
    return {target.name: sweep_target(target) for target in targets}
