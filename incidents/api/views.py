from __future__ import annotations

import json

import django_filters
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed, Throttled, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from grace_site import api, auth_limits
from grace_site.api import ModelPermissions, error
from incidents import channels, intake, services
from incidents.api.serializers import (
    AcceptedSerializer,
    AlertmanagerWebhookSerializer,
    IncidentCreateSerializer,
    IncidentDetailSerializer,
    IncidentSerializer,
    WebhookResultSerializer,
)
from incidents.choices import ChannelKind, DeliveryKind, IncidentStatus
from incidents.models import Channel, Incident

WAIT_PARAMETER = OpenApiParameter(
    "wait",
    bool,
    description="true: process the delivery in the request and answer with the incidents (the synchronous mode); "
    "default: answer 202 once the delivery is stored. The header `Grace-Wait: true` does the same.",
)
BACKLOGGED = error("More deliveries wait than GRACE_INTAKE_MAX_BACKLOG: retry after `Retry-After` seconds.")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}


def wants_wait(request) -> bool:
    """``?wait=true`` (or ``Grace-Wait: true``): the caller wants the incidents in the answer."""
    raw = request.query_params.get("wait", request.META.get("HTTP_GRACE_WAIT", "false")).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValidationError({"wait": [f"must be true or false, got {raw[:20]!r}"]})


def check_backlog() -> None:
    try:
        intake.check_backlog()
    except intake.Backlogged as exc:
        raise Throttled(wait=exc.retry_after, detail=str(exc)) from None


def accepted(delivery) -> Response:
    """202: the delivery is stored; its status is at ``Location``."""
    location = f"/api/deliveries/{delivery.pk}/"
    body = {"delivery": delivery.pk, "status": delivery.status, "alerts": delivery.alerts, "url": location}
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location})


def stored_body(request) -> str:
    """The request's JSON body, as parsed (what the consumers parse again)."""
    return json.dumps(request.data, ensure_ascii=False, separators=(",", ":"))


class IncidentFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=IncidentStatus.choices)
    diagnosis = django_filters.CharFilter(field_name="diagnosis_code")
    since = api.DateTimeFilter(field_name="last_seen", lookup_expr="gte")

    class Meta:
        model = Incident
        fields = ["status", "service", "diagnosis", "since", "source", "severity", "environment", "fingerprint"]


class WebhookNotConfigured(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Webhooks are disabled: set GRACE_WEBHOOK_TOKEN or create an Alertmanager channel with a token."
    default_code = "webhook_not_configured"


class ChannelActor:
    """An authenticated intake channel: it may raise incidents, and nothing else."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = is_superuser = False
    pk = None

    def __init__(self, channel: Channel):
        self.channel = channel

    def get_username(self) -> str:
        return f"channel:{self.channel.name}"

    def has_perm(self, perm, obj=None) -> bool:
        return False

    def has_perms(self, perms, obj=None) -> bool:
        return False


class ChannelTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>`` of a channel of one kind (the digest is looked up; the env token of the
    built-in Alertmanager channel is compared in constant time)."""

    kind = ChannelKind.API
    limit_name = "intake-token"  # what lockouts of wrong tokens are counted and audited under

    def authenticate(self, request):
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        with auth_limits.guarded(request, channel=self.limit_name):  # wrong tokens: 429 per client address
            channel = channels.authenticate(token, self.kind)
            if channel is None:
                raise AuthenticationFailed("Missing or wrong bearer token.")
        return ChannelActor(channel), None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="grace-intake"'


class WebhookTokenAuthentication(ChannelTokenAuthentication):
    """The Alertmanager webhook: a bearer token is required."""

    kind = ChannelKind.ALERTMANAGER
    limit_name = "webhook"

    def authenticate(self, request):
        if not channels.webhooks_configured():
            raise WebhookNotConfigured()
        result = super().authenticate(request)
        if result is None:
            raise AuthenticationFailed("Missing or wrong bearer token.")
        return result

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="grace-webhooks"'


class IntakePermissions(ModelPermissions):
    """Users need the model permissions; an API channel may only raise incidents."""

    def has_permission(self, request, view):
        if isinstance(request.user, ChannelActor):
            return view.action == "create"
        return super().has_permission(request, view)


class IncidentViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Incidents: post a signal, list and read what GRACE knows.

    Users post with their own credentials (the built-in ``api-users`` channel); an integration posts with its
    API channel's bearer token and may only post.
    """

    authentication_classes = [*api_settings.DEFAULT_AUTHENTICATION_CLASSES, ChannelTokenAuthentication]

    queryset = Incident.objects.select_related("channel")
    permission_classes = [IntakePermissions]
    filterset_class = IncidentFilter
    ordering_fields = ["last_seen", "first_seen", "occurrences", "id"]

    def get_serializer_class(self):
        if self.action == "create":
            return IncidentCreateSerializer
        if self.action == "retrieve":
            return IncidentDetailSerializer
        return IncidentSerializer

    @extend_schema(
        request=IncidentCreateSerializer,
        parameters=[WAIT_PARAMETER],
        responses={
            202: OpenApiResponse(AcceptedSerializer, description="Stored: a consumer turns it into an incident."),
            201: OpenApiResponse(IncidentSerializer, description="wait=true: a new incident."),
            200: OpenApiResponse(
                IncidentSerializer, description="wait=true: a duplicate of an active incident, absorbed."
            ),
            429: BACKLOGGED,
        },
    )
    def create(self, request, *args, **kwargs):
        wait = wants_wait(request)
        check_backlog()
        serializer = IncidentCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if isinstance(request.user, ChannelActor):
            channel, raised_by = request.user.channel, None
        else:
            channel, raised_by = channels.builtin(channels.USERS), request.user
        if not wait:
            return accepted(intake.accept(DeliveryKind.INCIDENT, channel, stored_body(request), raised_by=raised_by))
        delivery, outcome = services.retry_transient(intake.process_now)(
            DeliveryKind.INCIDENT, channel, request.data, raised_by=raised_by
        )  # ValidationError: 400
        result = outcome.ingested[0]
        body = IncidentSerializer(result.incident).data
        return Response(
            body,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
            headers={"Grace-Delivery": str(delivery.pk)},
        )


class AlertmanagerWebhookView(APIView):
    """Alertmanager's webhook receiver (payload version 4)."""

    authentication_classes = [WebhookTokenAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes: list = []

    @extend_schema(
        request=AlertmanagerWebhookSerializer,
        parameters=[WAIT_PARAMETER],
        responses={
            202: OpenApiResponse(AcceptedSerializer, description="Stored: consumers apply it."),
            200: OpenApiResponse(WebhookResultSerializer, description="wait=true: what the delivery did."),
            429: BACKLOGGED,
            503: error("Webhooks are disabled: no token is configured."),
        },
        summary="Receive an Alertmanager webhook delivery",
    )
    def post(self, request):
        wait = wants_wait(request)
        check_backlog()
        serializer = AlertmanagerWebhookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel = request.user.channel
        if not wait:
            alerts = len(serializer.validated_data["alerts"])
            return accepted(intake.accept(DeliveryKind.ALERTMANAGER, channel, stored_body(request), alerts=alerts))
        delivery, outcome = services.retry_transient(intake.process_now)(
            DeliveryKind.ALERTMANAGER, channel, request.data
        )
        return Response(outcome.result, headers={"Grace-Delivery": str(delivery.pk)})


class ChannelTokenScheme(OpenApiAuthenticationExtension):
    """The bearer token of an intake channel, in the published schema."""

    target_class = ChannelTokenAuthentication
    name = "channelToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API channel's token (grc_...)."}


class WebhookTokenScheme(OpenApiAuthenticationExtension):
    target_class = WebhookTokenAuthentication
    name = "webhookToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An Alertmanager channel's token (grc_...), or GRACE_WEBHOOK_TOKEN.",
        }
