from django.db import models


class Source(models.TextChoices):
    API = "api", "API"
    ALERTMANAGER = "alertmanager", "Alertmanager"
    EXCEPTION = "exception", "Captured exception"
    SWEEP = "sweep", "Health sweep"
    BENCHMARK = "benchmark", "Benchmark regression"


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"
    CRITICAL = "critical", "Critical"


class IncidentStatus(models.TextChoices):
    OPEN = "open", "Open"
    HEALING = "healing", "Healing"
    RESOLVED = "resolved", "Resolved"
    ESCALATED = "escalated", "Escalated"
    IGNORED = "ignored", "Ignored"


# An incident in one of these states absorbs duplicates of its fingerprint.
IncidentStatus.ACTIVE = (IncidentStatus.OPEN, IncidentStatus.HEALING, IncidentStatus.ESCALATED)
IncidentStatus.CLOSED = (IncidentStatus.RESOLVED, IncidentStatus.IGNORED)

UNKNOWN_DIAGNOSIS = "unknown"


class SweepKind(models.TextChoices):
    HOST = "host", "Host (disk, memory, CPU, load)"
    SQLITE = "sqlite", "SQLite database (WAL size, busy)"
    POSTGRES = "postgres", "PostgreSQL database (long transactions, blocked locks)"
    HTTP = "http", "HTTP endpoint (status, latency)"


# Diagnosis codes GRACE ships rules for; rules may use any other code too.
KNOWN_DIAGNOSES = (
    "database_locked",
    "database_wal_bloat",
    "disk_pressure",
    "memory_pressure",
    "high_cpu",
    "latency_spike",
    "error_rate_spike",
    "service_down",
    "cache_corruption",
    "pod_crashloop",
    "container_unhealthy",
    "asg_capacity_low",
    "rds_unavailable",
    "benchmark_regression",
)
