from django.db import models
from django.db.models import Q

from incidents.choices import UNKNOWN_DIAGNOSIS, IncidentStatus, Severity, Source


class Incident(models.Model):
    """A problem GRACE knows about: one per fingerprint while it is active.

    Duplicate signals of an active incident only bump ``occurrences`` and
    ``last_seen``. State changes go through ``incidents.services``.
    """

    fingerprint = models.CharField(max_length=64)
    source = models.CharField(max_length=20, choices=Source.choices)
    service = models.CharField(max_length=200, blank=True, help_text="The service or target the signal is about.")
    environment = models.CharField(max_length=50, default="production")
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    title = models.CharField(max_length=500)
    message = models.TextField(blank=True)
    labels = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    occurrences = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=10, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    status_reason = models.CharField(max_length=500, blank=True)
    diagnosis_code = models.CharField(max_length=64, default=UNKNOWN_DIAGNOSIS)
    diagnosis_confidence = models.FloatField(default=0.0)
    diagnosis_evidence = models.JSONField(default=dict, blank=True)
    raw_payload = models.JSONField(default=dict, blank=True, help_text="The signal as received (size-capped).")
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            # One active incident per fingerprint: the truth behind dedupe.
            models.UniqueConstraint(
                fields=["fingerprint"],
                condition=Q(status__in=["open", "healing", "escalated"]),
                name="incident_one_active_per_fingerprint",
            ),
            models.CheckConstraint(condition=Q(occurrences__gte=1), name="incident_occurrences_positive"),
        ]
        indexes = [
            # list filters: status + service, newest first
            models.Index(fields=["status", "service", "-last_seen"], name="incident_status_service_idx"),
            # list filter by diagnosis
            models.Index(fields=["diagnosis_code", "-last_seen"], name="incident_diagnosis_idx"),
            # the reaper: open incidents without a run
            models.Index(fields=["status", "created_at"], name="incident_status_created_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"
