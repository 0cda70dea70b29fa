from rest_framework import serializers

from approvals.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["seq", "at", "actor", "action", "object_type", "object_id", "data", "prev_hash", "hash"]
        read_only_fields = fields
