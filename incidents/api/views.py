from __future__ import annotations

import hmac

import django_filters
from django.conf import settings
from django.db.models import Max
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from grace_site import api
from grace_site.api import ModelPermissions, error
from incidents import alertmanager, services
from incidents.api.serializers import (
    AlertmanagerWebhookSerializer,
    IncidentCreateSerializer,
    IncidentDetailSerializer,
    IncidentSerializer,
    WebhookResultSerializer,
)
from incidents.choices import IncidentStatus
from incidents.models import Incident


class IncidentFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=IncidentStatus.choices)
    diagnosis = django_filters.CharFilter(field_name="diagnosis_code")
    since = api.DateTimeFilter(field_name="last_seen", lookup_expr="gte")

    class Meta:
        model = Incident
        fields = ["status", "service", "diagnosis", "since", "source", "severity", "environment", "fingerprint"]


class IncidentViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Incidents: post a signal, list and read what GRACE knows."""

    queryset = Incident.objects.annotate(latest_heal_run=Max("heal_runs__id"))
    permission_classes = [ModelPermissions]
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
        responses={
            201: OpenApiResponse(IncidentSerializer, description="A new incident."),
            200: OpenApiResponse(IncidentSerializer, description="A duplicate of an active incident: absorbed."),
        },
    )
    def create(self, request, *args, **kwargs):
        serializer = IncidentCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw = request.data if isinstance(request.data, dict) else {}
        signal = services.Signal(**serializer.validated_data, raw=raw)
        result = services.retry_transient(services.ingest)(signal, actor=request.user)
        body = IncidentSerializer(result.incident).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class WebhookNotConfigured(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Webhooks are disabled: GRACE_WEBHOOK_TOKEN is not configured."
    default_code = "webhook_not_configured"


class WebhookActor:
    """The authenticated caller of a webhook (named in the audit log)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, name: str):
        self.name = name

    def get_username(self) -> str:
        return self.name


class WebhookTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <GRACE_WEBHOOK_TOKEN>``, compared in constant time."""

    def authenticate(self, request):
        expected = settings.GRACE_WEBHOOK_TOKEN
        if not expected:
            raise WebhookNotConfigured()
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise AuthenticationFailed("Missing or wrong bearer token.")
        return WebhookActor("webhook:alertmanager"), None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="grace-webhooks"'


class AlertmanagerWebhookView(APIView):
    """Alertmanager's webhook receiver (payload version 4)."""

    authentication_classes = [WebhookTokenAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes: list = []

    @extend_schema(
        request=AlertmanagerWebhookSerializer,
        responses={200: WebhookResultSerializer, 503: error("Webhooks are disabled: GRACE_WEBHOOK_TOKEN is not set.")},
        summary="Receive an Alertmanager webhook delivery",
        auth=[],
    )
    def post(self, request):
        serializer = AlertmanagerWebhookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        summary = services.retry_transient(alertmanager.process_delivery)(serializer.validated_data, actor=request.user)
        return Response(summary)
