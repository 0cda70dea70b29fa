from __future__ import annotations

from rest_framework import serializers

from incidents import normalize
from incidents.api.fields import LabelsField, StrictCharField
from incidents.choices import Severity, Source
from incidents.models import Incident


class IncidentCreateSerializer(serializers.Serializer):
    """A signal posted to the API. Only ``title`` is required."""

    source = serializers.ChoiceField(
        choices=Source.choices,
        required=False,
        help_text="Ignored: the source is the channel's (kept in the stored payload as what was claimed).",
    )
    service = StrictCharField(max_length=normalize.MAX_SERVICE, required=False, allow_blank=True, default="")
    environment = StrictCharField(
        max_length=normalize.MAX_ENVIRONMENT,
        required=False,
        allow_blank=True,
        default="",
        help_text="Evidence only: the inventory's environment of the service is the one GRACE uses.",
    )
    title = StrictCharField(max_length=normalize.MAX_TITLE)
    message = StrictCharField(
        max_length=normalize.MAX_MESSAGE, required=False, allow_blank=True, default="", trim_whitespace=False
    )
    severity = serializers.ChoiceField(choices=Severity.choices, default=Severity.WARNING)
    labels = LabelsField(required=False, default=dict)
    fingerprint = serializers.RegexField(
        normalize.FINGERPRINT_RE,
        required=False,
        help_text="Optional: your own dedupe key (1-64 of letters, digits, ':._-'). Default: computed.",
    )


class DiagnosisSerializer(serializers.Serializer):
    code = serializers.CharField(source="diagnosis_code")
    confidence = serializers.FloatField(source="diagnosis_confidence")
    evidence = serializers.JSONField(source="diagnosis_evidence")


class IncidentSerializer(serializers.ModelSerializer):
    diagnosis = DiagnosisSerializer(source="*", read_only=True)
    channel = serializers.SlugRelatedField(slug_field="name", read_only=True)
    heal_run_id = serializers.IntegerField(
        source="latest_run_id", read_only=True, allow_null=True, help_text="The latest heal run for it, if any."
    )

    class Meta:
        model = Incident
        fields = [
            "id",
            "fingerprint",
            "status",
            "status_reason",
            "diagnosis",
            "heal_run_id",
            "channel",
            "source",
            "service",
            "environment",
            "claimed_environment",
            "severity",
            "title",
            "message",
            "labels",
            "occurrences",
            "first_seen",
            "last_seen",
            "resolved_at",
        ]
        read_only_fields = fields


class IncidentDetailSerializer(IncidentSerializer):
    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "raw_payload", "created_at", "updated_at"]
        read_only_fields = fields


class AcceptedSerializer(serializers.Serializer):
    """The answer of an intake endpoint once the delivery is stored (202)."""

    delivery = serializers.IntegerField(help_text="The delivery's id: GET /api/deliveries/{id}/ tells its status.")
    status = serializers.CharField(help_text="pending: a consumer will apply it.")
    alerts = serializers.IntegerField(help_text="Signals in the delivery.")
    url = serializers.CharField(help_text="Where its status is (also the Location header).")


class WebhookResultSerializer(serializers.Serializer):
    alerts = serializers.IntegerField()
    created = serializers.IntegerField()
    absorbed = serializers.IntegerField()
    resolved = serializers.IntegerField()
    incidents = serializers.ListField(child=serializers.IntegerField())


# Alertmanager's webhook body, version 4:
# https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
class AlertmanagerAlertSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["firing", "resolved"])
    labels = LabelsField(allow_empty=False)
    annotations = LabelsField(annotations=True, required=False, default=dict)
    startsAt = serializers.DateTimeField()  # noqa: N815 - Alertmanager's field names
    endsAt = StrictCharField(required=False, allow_blank=True, default="")  # noqa: N815
    generatorURL = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)  # noqa: N815
    fingerprint = StrictCharField(required=False, allow_blank=True, default="", max_length=64)

    def validate_labels(self, labels: dict) -> dict:
        from incidents.alertmanager import SEVERITY_ALIASES

        severity = labels.get("severity")
        if severity is not None and severity.lower() not in SEVERITY_ALIASES:
            raise serializers.ValidationError(
                f"unknown severity {severity!r}; use one of {', '.join(sorted(SEVERITY_ALIASES))}"
            )
        return labels


class AlertmanagerWebhookSerializer(serializers.Serializer):
    version = serializers.ChoiceField(choices=["4"])
    status = serializers.ChoiceField(choices=["firing", "resolved"])
    receiver = StrictCharField(required=False, allow_blank=True, default="")
    alerts = serializers.ListField(child=AlertmanagerAlertSerializer(), allow_empty=True)
    groupLabels = LabelsField(required=False, default=dict)  # noqa: N815
    commonLabels = LabelsField(required=False, default=dict)  # noqa: N815
    commonAnnotations = LabelsField(annotations=True, required=False, default=dict)  # noqa: N815
    externalURL = StrictCharField(required=False, allow_blank=True, default="")  # noqa: N815
    groupKey = StrictCharField(required=False, allow_blank=True, default="")  # noqa: N815
    truncatedAlerts = serializers.IntegerField(required=False, default=0, min_value=0)  # noqa: N815

    def validate_alerts(self, alerts: list) -> list:
        from django.conf import settings

        if len(alerts) > settings.GRACE_INTAKE_MAX_ALERTS:
            raise serializers.ValidationError(f"at most {settings.GRACE_INTAKE_MAX_ALERTS} alerts per delivery")
        return alerts
