"""`/api/deliveries/`: what became of a stored intake delivery, and the replay of a parked one.

Users read with ``incidents.view_delivery`` and replay with ``incidents.change_delivery``. An integration may
read the deliveries of its own channel with the channel's bearer token (to follow the 202 it was given), and
nothing else.
"""

from __future__ import annotations

import django_filters
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework.settings import api_settings

from grace_site import auth_limits
from grace_site.api import CONFLICT, ActionPermissions, Conflict
from incidents import channels, intake
from incidents.api.views import ChannelActor, ChannelTokenAuthentication
from incidents.choices import ChannelKind, DeliveryKind, DeliveryStatus
from incidents.models import Delivery


class DeliverySerializer(serializers.ModelSerializer):
    channel = serializers.SlugRelatedField(slug_field="name", read_only=True)
    result = serializers.JSONField(
        read_only=True, help_text="Once done: alerts, created, absorbed, resolved and the incident ids."
    )

    class Meta:
        model = Delivery
        fields = [
            "id",
            "kind",
            "channel",
            "status",
            "alerts",
            "received_at",
            "processed_at",
            "attempts",
            "error",
            "result",
        ]
        read_only_fields = fields


class DeliveryFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=DeliveryStatus.choices)
    kind = django_filters.ChoiceFilter(choices=DeliveryKind.choices)
    channel = django_filters.CharFilter(field_name="channel__name")

    class Meta:
        model = Delivery
        fields = ["status", "kind", "channel"]


class AnyChannelTokenAuthentication(ChannelTokenAuthentication):
    """The bearer token of any intake channel (API or Alertmanager)."""

    def authenticate(self, request):
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        with auth_limits.guarded(request, channel=self.limit_name):
            channel = channels.authenticate(token, ChannelKind.API) or channels.authenticate(
                token, ChannelKind.ALERTMANAGER
            )
            if channel is None:
                raise AuthenticationFailed("Missing or wrong bearer token.")
        return ChannelActor(channel), None


class AnyChannelTokenScheme(OpenApiAuthenticationExtension):
    """Any intake channel's bearer token, in the published schema."""

    target_class = AnyChannelTokenAuthentication
    name = "anyChannelToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The token (grc_...) of the API or Alertmanager channel that sent the delivery.",
        }


class DeliveryPermissions(ActionPermissions):
    """Users: the model permissions (replay needs change). A channel: reading its own deliveries by id."""

    action_permissions = {"replay": ["incidents.change_delivery"]}

    def has_permission(self, request, view) -> bool:
        if isinstance(request.user, ChannelActor):
            return view.action == "retrieve"
        return super().has_permission(request, view)


class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Stored intake deliveries: pending, processing, done (with what they did) or parked (with the error)."""

    authentication_classes = [*api_settings.DEFAULT_AUTHENTICATION_CLASSES, AnyChannelTokenAuthentication]
    permission_classes = [DeliveryPermissions]
    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilter
    ordering_fields = ["id", "received_at"]
    action_permissions = DeliveryPermissions.action_permissions

    def get_queryset(self):
        queryset = Delivery.objects.select_related("channel").defer("body")
        if isinstance(self.request.user, ChannelActor):
            queryset = queryset.filter(channel=self.request.user.channel)
        return queryset

    @extend_schema(
        request=None,
        responses={200: DeliverySerializer, 409: CONFLICT},
        summary="Send a parked delivery back to the consumers",
    )
    @action(detail=True, methods=["post"])
    def replay(self, request, pk=None):
        delivery = self.get_object()
        if not intake.replay(delivery.pk, actor=request.user):
            raise Conflict(f"delivery {delivery.pk} is {delivery.status}: only a parked delivery can be replayed")
        delivery.refresh_from_db()
        return Response(DeliverySerializer(delivery).data)
