from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from approvals.models import ApprovalDecision, ApprovalRequest, AuditEvent, PolicyRule
from approvals.policy import shadow_mode


class AuditEventSerializer(serializers.ModelSerializer):
    """An entry; ``seq``, ``prev_hash`` and ``hash`` are null until the sealer has chained it (within seconds)."""

    seq = serializers.IntegerField(read_only=True, allow_null=True)
    prev_hash = serializers.CharField(read_only=True, allow_null=True)
    hash = serializers.CharField(read_only=True, allow_null=True)
    data = serializers.SerializerMethodField(help_text="The event's data, credentials masked.")

    class Meta:
        model = AuditEvent
        fields = ["id", "seq", "at", "actor", "action", "object_type", "object_id", "data", "prev_hash", "hash"]
        read_only_fields = fields

    def get_data(self, obj: AuditEvent) -> dict:
        return obj.masked_data()


class ApprovalDecisionSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = ApprovalDecision
        fields = ["user", "approve", "reason", "at"]
        read_only_fields = fields


class ApprovalRequestSerializer(serializers.ModelSerializer):
    run_status = serializers.CharField(source="run.status", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True, allow_null=True)
    approvals = serializers.SerializerMethodField()
    shadow = serializers.SerializerMethodField()
    decisions = ApprovalDecisionSerializer(many=True, read_only=True)

    class Meta:
        model = ApprovalRequest
        fields = [
            "id",
            "run",
            "run_status",
            "status",
            "status_reason",
            "tier",
            "required_approvals",
            "approvals",
            "plan_hash",
            "shadow",
            "requested_by",
            "context",
            "created_at",
            "expires_at",
            "decided_at",
            "decisions",
        ]
        read_only_fields = fields

    def get_approvals(self, obj: ApprovalRequest) -> int:
        return sum(1 for decision in obj.decisions.all() if decision.approve)

    def get_shadow(self, obj: ApprovalRequest) -> bool:
        """Shadow: the run will be recorded, never executed (global switch or the run's own flag)."""
        return bool(obj.run.shadow or obj.context.get("shadow") or self._global_shadow())

    def _global_shadow(self) -> bool:
        if "shadow_mode" not in self.context:
            self.context["shadow_mode"] = shadow_mode()
        return self.context["shadow_mode"]


class DecisionSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, allow_blank=False, trim_whitespace=True)


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$",
        "description": "Wall-clock time in the rule's window_timezone (no offset), HH:MM:SS.",
    }
)
class WallClockTimeField(serializers.TimeField):
    """A time of day in a named time zone: OpenAPI's ``format: time`` would demand a UTC offset."""


class PolicyRuleSerializer(serializers.ModelSerializer):
    window_start = WallClockTimeField(read_only=True, allow_null=True)
    window_end = WallClockTimeField(
        read_only=True, allow_null=True, help_text="Before the start: the window runs past midnight."
    )

    class Meta:
        model = PolicyRule
        exclude = ["created_at"]
        read_only_fields = [f.name for f in PolicyRule._meta.fields if f.name != "created_at"]


class GovernanceStatusSerializer(serializers.Serializer):
    shadow_mode = serializers.BooleanField()
    shadow_mode_from_setting = serializers.BooleanField()
    approval_ttl_minutes = serializers.IntegerField()
