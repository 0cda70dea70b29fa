from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from remediation.models import ActionAttempt, ContractResult, HealRun, Playbook, RunEvent, Snapshot
from remediation.planner import required_inputs, validate_steps


class RunEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["at", "from_status", "to_status", "note", "data"]


class ActionAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = ActionAttempt
        fields = [
            "step_index", "phase", "attempt", "idempotency_key", "action", "target", "params", "status",
            "started_at", "finished_at", "result", "error",
        ]  # fmt: skip


class ContractResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContractResult
        fields = ["step_index", "phase", "field", "operator", "expected", "actual", "passed", "detail", "observed_at"]


class SnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = Snapshot
        fields = ["step_index", "action", "target", "state", "manifest", "size_bytes", "created_at", "restored_at",
                  "purged_at"]  # fmt: skip


class HealRunSerializer(serializers.ModelSerializer):
    playbook = serializers.SlugRelatedField(slug_field="name", read_only=True)
    service = serializers.CharField(source="incident.service", read_only=True)

    class Meta:
        model = HealRun
        fields = [
            "id", "incident", "service", "status", "status_reason", "diagnosis_code", "playbook", "target", "family",
            "tier", "tier_reasons", "confidence", "verification_confidence", "dry_run", "shadow", "created_at",
            "heartbeat_at", "finished_at",
        ]  # fmt: skip


class HealRunDetailSerializer(HealRunSerializer):
    timeline = RunEventSerializer(source="events", many=True, read_only=True)
    attempts = ActionAttemptSerializer(many=True, read_only=True)
    contract_results = ContractResultSerializer(many=True, read_only=True)
    snapshots = SnapshotSerializer(many=True, read_only=True)

    class Meta(HealRunSerializer.Meta):
        fields = HealRunSerializer.Meta.fields + [
            "plan", "plan_hash", "policy_explanation", "timeline", "attempts", "contract_results", "snapshots",
        ]  # fmt: skip


class HealRequestSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField(default=False)


class RequiredInputSerializer(serializers.Serializer):
    step = serializers.IntegerField()
    action = serializers.CharField(required=False, help_text="An action step: the inventory resource kind must exist.")
    evidence = serializers.CharField(required=False, help_text="An evidence step: reads the kind when there is one.")
    resource_kind = serializers.CharField(allow_blank=True)
    resource_label = serializers.CharField(allow_blank=True, help_text="The label that picks among several.")
    labels = serializers.ListField(child=serializers.CharField(), help_text="Labels the step reads.")


class PlaybookSerializer(serializers.ModelSerializer):
    required_inputs = serializers.SerializerMethodField(
        help_text="Per step: the inventory resource kind of the incident's service it binds to, the label that "
        "selects among several, and the labels it reads."
    )

    class Meta:
        model = Playbook
        fields = [
            "id", "name", "description", "diagnosis_codes", "steps", "tier", "cooldown_seconds", "escalate_only",
            "enabled", "shadow", "paused_reason", "updated_at", "required_inputs",
        ]  # fmt: skip
        read_only_fields = ["paused_reason", "updated_at"]

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
