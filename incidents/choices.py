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
