import django_filters
from rest_framework import viewsets

from approvals.api.serializers import AuditEventSerializer
from approvals.models import AuditEvent
from grace_site.permissions import ModelPermissions


class AuditEventFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["actor", "action", "object_type", "object_id"]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit chain, newest first. Read-only: it cannot be changed through any interface."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    permission_classes = [ModelPermissions]
    filterset_class = AuditEventFilter
    ordering_fields = ["seq", "at"]
