import django_filters
from django.conf import settings
from django.db.models import Case, F, IntegerField, Value, When
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.response import Response

from approvals import services
from approvals.api.serializers import (
    ApprovalRequestSerializer,
    AuditEventSerializer,
    DecisionSerializer,
    GovernanceStatusSerializer,
    PolicyRuleSerializer,
)
from approvals.choices import RequestStatus
from approvals.models import ApprovalRequest, AuditEvent, PolicyRule
from approvals.policy import shadow_mode
from grace_site import api
from grace_site.api import ModelPermissions


class AuditEventFilter(django_filters.FilterSet):
    since = api.DateTimeFilter(field_name="at", lookup_expr="gte")
    until = api.DateTimeFilter(field_name="at", lookup_expr="lt")
    seq = django_filters.NumberFilter(field_name="seal__seq")
    sealed = django_filters.BooleanFilter(field_name="seal", lookup_expr="isnull", exclude=True)

    class Meta:
        model = AuditEvent
        fields = ["actor", "action", "object_type", "object_id"]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first: every entry as soon as its change committed, with its place in the hash
    chain (seq, prev_hash, hash) once sealed. Read-only: it cannot be changed through any interface."""

    queryset = AuditEvent.objects.annotate(
        seq=F("seal__seq"), prev_hash=F("seal__prev_hash"), hash=F("seal__hash")
    ).order_by("-id")
    serializer_class = AuditEventSerializer
    permission_classes = [ModelPermissions]
    filterset_class = AuditEventFilter
    ordering_fields = ["id", "seq", "at"]


api.answer(services.NotAllowed, 403)
api.answer(services.Conflict, 409)


class ApprovalRequestFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RequestStatus.choices)

    class Meta:
        model = ApprovalRequest
        fields = ["status", "tier", "run"]


class ApprovalRequestViewSet(viewsets.ReadOnlyModelViewSet):
    """Approval requests, pending first then newest. Approve or reject with a reason.

    404 for any id to a user who may not view approval requests (so the tier of a request is never told
    to them); 403 without the approve permission for the request's tier, or for a run you started;
    409 when the request is no longer pending, has expired, or you already decided it.
    """

    serializer_class = ApprovalRequestSerializer
    permission_classes = [api.ActionPermissions]
    # Deciding needs the view permission (checked for every detail route); the tier's approve
    # permission is checked by services.decide.
    action_permissions = {"approve": [], "reject": []}
    filterset_class = ApprovalRequestFilter
    ordering_fields = ["created_at", "expires_at", "tier"]

    def get_queryset(self):
        return (
            ApprovalRequest.objects.select_related("run", "requested_by")
            .prefetch_related("decisions__user")
            .annotate(
                pending_first=Case(
                    When(status=RequestStatus.PENDING, then=Value(0)), default=Value(1), output_field=IntegerField()
                )
            )
            .order_by("pending_first", "-created_at")
        )

    def _decide(self, request, pk, *, approve: bool) -> Response:
        approval = self.get_object()
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.decide(approval.pk, user=request.user, approve=approve, reason=body.validated_data["reason"])
        return Response(self.get_serializer(self.get_queryset().get(pk=approval.pk)).data)

    @extend_schema(request=DecisionSerializer, responses={200: ApprovalRequestSerializer, **api.statuses(409)})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._decide(request, pk, approve=True)

    @extend_schema(request=DecisionSerializer, responses={200: ApprovalRequestSerializer, **api.statuses(409)})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decide(request, pk, approve=False)


class PolicyRuleViewSet(viewsets.ReadOnlyModelViewSet):
    """Policy rules in precedence order (edited in the admin)."""

    queryset = PolicyRule.objects.all()
    serializer_class = PolicyRuleSerializer
    permission_classes = [ModelPermissions]
    filterset_fields = ["enabled", "effect"]


@extend_schema(responses=GovernanceStatusSerializer)
@api_view(["GET"])
@permission_classes([api.requires("approvals.view_policyrule")])
def governance_status(request):
    """Whether GRACE is in shadow mode (plans and gates, executes nothing), and approval expiry."""
    data = {
        "shadow_mode": shadow_mode(),
        "shadow_mode_from_setting": settings.GRACE_SHADOW_MODE,
        "approval_ttl_minutes": settings.GRACE_APPROVAL_TTL_MINUTES,
    }
    return Response(GovernanceStatusSerializer(data).data)
