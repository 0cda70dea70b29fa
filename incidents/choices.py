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


class ResourceKind(models.TextChoices):
    """What an inventory resource is; each kind is what one action family acts on (see docs/trust.md)."""

    SQLITE = "sqlite", "SQLite database file"
    CACHE = "cache", "Cache directory"
    SERVICE = "service", "Supervised service (a name in GRACE_SERVICES_FILE)"
    POSTGRES = "postgres", "PostgreSQL database (a name in GRACE_POSTGRES_TARGETS)"
    HTTP = "http", "HTTP endpoint"
    DOCKER_CONTAINER = "docker_container", "Docker container"
    DOCKER_SERVICE = "docker_service", "Docker Compose service"
    K8S_DEPLOYMENT = "k8s_deployment", "Kubernetes deployment"
    AWS_ASG = "aws_asg", "AWS Auto Scaling group"
    AWS_EC2 = "aws_ec2", "AWS EC2 instance"
    AWS_RDS = "aws_rds", "AWS RDS instance"


# Kinds that live on one host's disk or process table (the rest are reached over the network).
ResourceKind.LOCAL = (ResourceKind.SQLITE, ResourceKind.CACHE, ResourceKind.SERVICE)
# Scope keys each kind takes beside its target, outermost first (validated on save and in the catalogue).
RESOURCE_SCOPE: dict[str, tuple[str, ...]] = {
    ResourceKind.DOCKER_CONTAINER: ("engine",),
    ResourceKind.DOCKER_SERVICE: ("engine", "project"),
    ResourceKind.K8S_DEPLOYMENT: ("context", "namespace"),
    ResourceKind.AWS_ASG: ("account", "region"),
    ResourceKind.AWS_EC2: ("account", "region"),
    ResourceKind.AWS_RDS: ("account", "region"),
}
# Scope keys a resource of that kind must name (the others fall back to GRACE's configured default).
RESOURCE_SCOPE_REQUIRED: dict[str, tuple[str, ...]] = {
    ResourceKind.DOCKER_SERVICE: ("project",),
    ResourceKind.K8S_DEPLOYMENT: ("namespace",),
}


class ChannelKind(models.TextChoices):
    """How an integration reaches GRACE: its token authenticates on that endpoint only."""

    ALERTMANAGER = "alertmanager", "Alertmanager receiver (POST /api/webhooks/alertmanager/)"
    API = "api", "API client (POST /api/incidents/)"
    INTERNAL = "internal", "GRACE's own code paths (sweeps, benchmarks, exception capture, users)"


# The sources a channel an operator creates may stamp; sweep and benchmark come only from GRACE itself.
CHANNEL_SOURCES = (Source.ALERTMANAGER, Source.API, Source.EXCEPTION)


class DeliveryKind(models.TextChoices):
    """Which intake endpoint a stored delivery came through (what its body is)."""

    ALERTMANAGER = "alertmanager", "Alertmanager webhook delivery"
    INCIDENT = "incident", "Signal posted to /api/incidents/"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    DONE = "done", "Done"
    PARKED = "parked", "Parked"


# Not yet processed: what the backlog counts (parked deliveries wait for an operator instead).
DeliveryStatus.QUEUED = (DeliveryStatus.PENDING, DeliveryStatus.PROCESSING)
