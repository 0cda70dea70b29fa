from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from grace_site import api
from remediation.models import ActionAttempt, Agent, ContractResult, HealRun, Playbook, RunEvent, Snapshot
from remediation.planner import required_inputs, validate_steps


class RunEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["at", "from_status", "to_status", "note", "data"]


class ActionAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = ActionAttempt
        fields = [
            "step_index",
            "phase",
            "attempt",
            "idempotency_key",
            "action",
            "target",
            "params",
            "status",
            "started_at",
            "finished_at",
            "result",
            "error",
        ]


class ContractResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContractResult
        fields = ["step_index", "phase", "field", "operator", "expected", "actual", "passed", "detail", "observed_at"]


class SnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = Snapshot
        fields = [
            "step_index",
            "action",
            "target",
            "state",
            "manifest",
            "size_bytes",
            "created_at",
            "restored_at",
            "purged_at",
        ]


class HealRunSerializer(serializers.ModelSerializer):
    playbook = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    service = serializers.CharField(source="incident.service", read_only=True)

    class Meta:
        model = HealRun
        fields = [
            "id",
            "incident",
            "service",
            "status",
            "status_reason",
            "diagnosis_code",
            "playbook",
            "target",
            "family",
            "tier",
            "tier_reasons",
            "confidence",
            "verification_confidence",
            "dry_run",
            "shadow",
            "created_at",
            "heartbeat_at",
            "finished_at",
        ]


class HealRunDetailSerializer(HealRunSerializer):
    timeline = RunEventSerializer(source="events", many=True, read_only=True)
    attempts = ActionAttemptSerializer(many=True, read_only=True)
    contract_results = ContractResultSerializer(many=True, read_only=True)
    snapshots = SnapshotSerializer(many=True, read_only=True)

    class Meta(HealRunSerializer.Meta):
        fields = HealRunSerializer.Meta.fields + [
            "plan",
            "plan_hash",
            "policy_explanation",
            "timeline",
            "attempts",
            "contract_results",
            "snapshots",
        ]


class HealRequestSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField(default=False)


class RequiredInputSerializer(serializers.Serializer):
    step = serializers.IntegerField()
    action = serializers.CharField(required=False, help_text="An action step: the inventory resource kind must exist.")
    evidence = serializers.CharField(required=False, help_text="An evidence step: reads the kind when there is one.")
    resource_kind = serializers.CharField(allow_blank=True)
    resource_label = serializers.CharField(allow_blank=True, help_text="The label that picks among several.")
    labels = serializers.ListField(child=serializers.CharField(), help_text="Labels the step reads.")


class PlaybookSerializer(api.CheckedModelSerializer):
    required_inputs = serializers.SerializerMethodField(
        help_text="Per step: the inventory resource kind of the incident's service it binds to, the label that "
        "selects among several, and the labels it reads."
    )

    class Meta:
        model = Playbook
        fields = [
            "id",
            "name",
            "description",
            "diagnosis_codes",
            "steps",
            "tier",
            "cooldown_seconds",
            "escalate_only",
            "enabled",
            "shadow",
            "paused_reason",
            "updated_at",
            "required_inputs",
        ]
        read_only_fields = ["paused_reason", "updated_at"]
        # The database's playbook_tier_1_to_3 constraint, stated here so a bad tier is a 400 naming the field.
        extra_kwargs = {"tier": {"min_value": 1, "max_value": 3}}

    @extend_schema_field(RequiredInputSerializer(many=True))
    def get_required_inputs(self, playbook: Playbook) -> list[dict]:
        return required_inputs(playbook.steps)

    def validate_steps(self, steps):
        try:
            validate_steps(steps)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(exc.detail.get("steps", exc.detail)) from None
        return steps

    def validate_diagnosis_codes(self, codes):
        if not isinstance(codes, list) or not all(isinstance(c, str) and c for c in codes):
            raise serializers.ValidationError("must be a list of diagnosis codes")
        return codes


class ActionSerializer(serializers.Serializer):
    """One registered action of the catalogue (``GET /api/actions/``)."""

    name = serializers.CharField()
    family = serializers.CharField()
    tier = serializers.IntegerField(min_value=1, max_value=3)
    idempotent = serializers.BooleanField()
    reversible = serializers.BooleanField()
    timeout = serializers.FloatField(help_text="Seconds.")
    description = serializers.CharField()
    params = serializers.DictField(child=serializers.CharField(), help_text="Parameter name to its field type.")


class OpenBreakerSerializer(serializers.Serializer):
    action = serializers.CharField()
    target = serializers.CharField()
    state = serializers.CharField(help_text="open or half-open")
    failures = serializers.IntegerField()
    opened_at = serializers.DateTimeField(allow_null=True)
    resets_at = serializers.DateTimeField(allow_null=True)


class SpentLimitSerializer(serializers.Serializer):
    action = serializers.CharField()
    target = serializers.CharField()
    limit = serializers.CharField()
    resets_at = serializers.DateTimeField()


class ResilienceSerializer(serializers.Serializer):
    breakers = OpenBreakerSerializer(many=True)
    rate_limits = SpentLimitSerializer(many=True)


class AgentSerializer(serializers.ModelSerializer):
    live = serializers.SerializerMethodField(help_text="Heard from within GRACE_AGENT_LIVE_SECONDS and not stopped.")

    class Meta:
        model = Agent
        fields = [
            "id",
            "host",
            "name",
            "queues",
            "version",
            "var_dir",
            "pid",
            "started_at",
            "last_seen",
            "stopped_at",
            "live",
        ]
        read_only_fields = fields

    def get_live(self, agent: Agent) -> bool:
        cutoff = timezone.now() - timedelta(seconds=settings.GRACE_AGENT_LIVE_SECONDS)
        return agent.stopped_at is None and agent.last_seen >= cutoff
