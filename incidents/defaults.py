"""Shipped defaults: diagnosis rules, sweep schedules and a sweep target for this host.

``install()`` is idempotent (existing rows, possibly edited in the admin, are left alone) and returns how
many rows it created. ``manage.py grace_setup`` calls it.
"""

from __future__ import annotations

from django.conf import settings

from approvals import audit
from grace_site.beat import ensure_interval_task
from incidents import channels, inventory
from incidents.choices import ResourceKind, Source, SweepKind
from incidents.models import DiagnosisRule, Resource, Service, SweepTarget

GRACE_SERVICE = "grace"

AM, SWEEP = Source.ALERTMANAGER, Source.SWEEP
I = "(?i)"  # noqa: E741 - case-insensitive prefix

# (name, code, confidence, conditions). Lower positions first: specific rules before broad ones.
RULES: list[tuple[str, str, float, dict]] = [
    # health sweeps: exact checks, high confidence
    ("sweep-sqlite-wal", "database_wal_bloat", 0.95, {"source": SWEEP, "label_equals": {"check": "sqlite_wal"}}),
    ("sweep-sqlite-busy", "database_locked", 0.9, {"source": SWEEP, "label_equals": {"check": "sqlite_busy"}}),
    ("sweep-pg-blocked", "database_locked", 0.9, {"source": SWEEP, "label_equals": {"check": "pg_blocked_locks"}}),
    ("sweep-pg-long-tx", "database_locked", 0.7, {"source": SWEEP, "label_equals": {"check": "pg_long_transaction"}}),
    ("sweep-pg-down", "service_down", 0.9, {"source": SWEEP, "label_equals": {"check": "postgres_down"}}),
    ("sweep-disk", "disk_pressure", 0.95, {"source": SWEEP, "label_equals": {"check": "disk"}}),
    ("sweep-memory", "memory_pressure", 0.9, {"source": SWEEP, "label_equals": {"check": "memory"}}),
    ("sweep-cpu", "high_cpu", 0.85, {"source": SWEEP, "label_equals": {"check": "cpu"}}),
    ("sweep-load", "high_cpu", 0.75, {"source": SWEEP, "label_equals": {"check": "load"}}),
    ("sweep-http-status", "service_down", 0.9, {"source": SWEEP, "label_equals": {"check": "http_status"}}),
    ("sweep-http-latency", "latency_spike", 0.85, {"source": SWEEP, "label_equals": {"check": "http_latency"}}),
    # benchmark regressions, opened by the learning app through intake
    ("benchmark-regression", "benchmark_regression", 0.95, {"source": Source.BENCHMARK}),
    # Kubernetes / containers / cloud (alert names of kube-prometheus and common exporters)
    ("k8s-crashloop-reason", "pod_crashloop", 0.95, {"label_equals": {"reason": "CrashLoopBackOff"}}),
    ("k8s-crashloop", "pod_crashloop", 0.9, {"label_regex": {"alertname": I + r"crash.?loop"}}),
    (
        "container-unhealthy",
        "container_unhealthy",
        0.85,
        {"label_regex": {"alertname": I + r"container.*(unhealthy|down|restart|oom)"}},
    ),
    (
        "asg-capacity-low",
        "asg_capacity_low",
        0.85,
        {"label_regex": {"alertname": I + r"(asg|auto.?scaling).*(capacity|instances|low)|capacity.?low"}},
    ),
    ("rds-unavailable", "rds_unavailable", 0.85, {"label_regex": {"alertname": I + r"rds"}}),
    # databases
    ("sqlite-wal-alert", "database_wal_bloat", 0.85, {"label_regex": {"alertname": I + r"wal"}}),
    (
        "db-locked-alert",
        "database_locked",
        0.85,
        {"label_regex": {"alertname": I + r"(database|db|sqlite|table).?(locked|busy|lock)|lock.?(wait|contention)"}},
    ),
    ("db-locked-message", "database_locked", 0.8, {"message_regex": I + r"database is locked|deadlock detected"}),
    (
        "cache-corruption-alert",
        "cache_corruption",
        0.8,
        {"label_regex": {"alertname": I + r"cache.*(corrupt|invalid)"}},
    ),
    (
        "cache-corruption-message",
        "cache_corruption",
        0.7,
        {"message_regex": I + r"cache.{0,40}corrupt|corrupt.{0,40}cache"},
    ),
    # host resources
    (
        "disk-alert",
        "disk_pressure",
        0.85,
        {"label_regex": {"alertname": I + r"disk|filesystem|volume.*(full|space)|inodes"}},
    ),
    ("memory-alert", "memory_pressure", 0.85, {"label_regex": {"alertname": I + r"memory|oom|swap"}}),
    (
        "cpu-value",
        "high_cpu",
        0.8,
        {"source": AM, "thresholds": [{"field": "annotations.cpu_percent", "op": ">=", "value": 90}]},
    ),
    ("cpu-alert", "high_cpu", 0.85, {"label_regex": {"alertname": I + r"cpu|load|throttl"}}),
    # service health
    ("latency-alert", "latency_spike", 0.85, {"label_regex": {"alertname": I + r"latency|slow|p9\d"}}),
    (
        "error-rate-alert",
        "error_rate_spike",
        0.85,
        {"label_regex": {"alertname": I + r"error.?(rate|ratio|budget)|5xx"}},
    ),
    (
        "service-down-alert",
        "service_down",
        0.85,
        {"label_regex": {"alertname": I + r"(service|target|instance|endpoint|host).?(down|unreachable)|^up$|absent"}},
    ),
]

# One beat entry per sweep kind. The expiry drops runs that could not start in time (after downtime).
SWEEP_SCHEDULES = [
    ("incidents: sweep host", "incidents.sweep_host", 60),
    ("incidents: sweep SQLite", "incidents.sweep_sqlite", 60),
    ("incidents: sweep PostgreSQL", "incidents.sweep_postgres", 60),
    ("incidents: sweep HTTP", "incidents.sweep_http", 30),
]
# The durable intake's beat pass (lost consumers and wake-ups, retention), on the intake queue.
INTAKE_SCHEDULE = ("incidents: intake redrive", "incidents.redrive_deliveries", 5)


def install() -> int:
    created = 0
    for position, (name, code, confidence, conditions) in enumerate(RULES, start=1):
        rule, made = DiagnosisRule.objects.get_or_create(
            name=name, defaults={"position": position * 10, "code": code, "confidence": confidence, **conditions}
        )
        if made:
            created += 1
            audit.record("diagnosis_rule.created", actor="system:defaults", obj=rule, data={"code": code})
    for name, task, seconds in SWEEP_SCHEDULES:
        created += ensure_interval_task(
            name,
            task,
            every=seconds,
            queue="sweeps",
            expires=seconds,
            description="Health sweep shipped with GRACE (targets in Incidents > Sweep targets).",
        )
    name, task, seconds = INTAKE_SCHEDULE
    created += ensure_interval_task(
        name,
        task,
        every=seconds,
        queue="intake",
        expires=seconds,
        description="Durable intake: re-sends lost consumers and wake-ups, removes old processed deliveries.",
    )
    created += channels.ensure_builtin()
    grace, resources = _grace_service()
    created += len(resources)
    targets = [("this-host", SweepKind.HOST, {"location": "/", "service": grace.name})]
    if "database" in resources:
        targets.append(("grace-database", SweepKind.SQLITE, {"resource": resources["database"]}))
    for name, kind, fields in targets:
        target, made = SweepTarget.objects.get_or_create(name=name, defaults={"kind": kind, **fields})
        if made:
            created += 1
            audit.record("sweep_target.created", actor="system:defaults", obj=target, data={"kind": kind})
    return created


def _grace_service() -> tuple[Service, dict[str, Resource]]:
    """GRACE itself as an inventory service (production, tier floor 2: healing itself needs a human), with its
    health endpoint (the benchmarks' default endpoint) and, on SQLite, its database (swept for WAL growth).
    Returns the service and the resources created now."""
    service = Service.objects.filter(name=GRACE_SERVICE).first()
    if service is None:
        service = inventory.save_service(
            Service(
                name=GRACE_SERVICE,
                owner="GRACE operators",
                environment="production",
                tier_floor=2,
                description="GRACE itself (shipped default).",
            ),
            actor="system:defaults",
        )
    wanted = {"health": (ResourceKind.HTTP, f"http://127.0.0.1:{settings.GRACE_PORT}/api/health/")}
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        wanted["database"] = (ResourceKind.SQLITE, str(database["NAME"]))
    made = {}
    for name, (kind, target) in wanted.items():
        if not service.resources.filter(name=name).exists():
            made[name] = inventory.save_resource(
                Resource(service=service, name=name, kind=kind, target=target), actor="system:defaults"
            )
    return service, made
