"""`/api/inventory/services/`, `/api/inventory/resources/` and `/api/channels/`.

Writes go through ``incidents.inventory`` and ``incidents.channels`` (validated, audited). A channel's token is
in the response that creates it (or ``POST /api/channels/{id}/token/``) and never again.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from grace_site import api
from grace_site.api import CheckedModelSerializer, ModelPermissions
from incidents import channels, inventory
from incidents.choices import RESOURCE_SCOPE, ChannelKind, ResourceKind
from incidents.models import Channel, Resource, Service


class ResourceSerializer(CheckedModelSerializer):
    service = serializers.SlugRelatedField(slug_field="name", queryset=Service.objects.all())
    kind = serializers.ChoiceField(choices=ResourceKind.choices)
    scope = serializers.DictField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text="Keys by kind: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in RESOURCE_SCOPE.items()),
    )
    locator = serializers.SerializerMethodField(help_text="The canonical identity runs and breakers key on.")

    class Meta:
        model = Resource
        fields = ["id", "service", "name", "kind", "target", "scope", "host", "description", "locator", "updated_at"]
        read_only_fields = ["updated_at"]

    def get_locator(self, resource: Resource) -> str:
        return inventory.locator(resource)


class ServiceSerializer(CheckedModelSerializer):
    hosts = serializers.ListField(child=serializers.CharField(max_length=63), required=False)
    tier_floor = serializers.IntegerField(min_value=1, max_value=3, default=1)
    resources = ResourceSerializer(many=True, read_only=True)

    class Meta:
        model = Service
        fields = ["id", "name", "owner", "environment", "tier_floor", "hosts", "description", "resources", "updated_at"]
        read_only_fields = ["updated_at"]


class AuditedWrites:
    """Create, update and delete through the inventory's service functions (validated and audited)."""

    save_fn = None
    delete_fn = None

    def _save(self, serializer, instance):
        for name, value in serializer.validated_data.items():
            setattr(instance, name, value)
        type(self).save_fn(instance, actor=self.request.user)  # a ValidationError is a 400 naming the field
        serializer.instance = instance

    def perform_create(self, serializer):
        self._save(serializer, serializer.Meta.model())

    def perform_update(self, serializer):
        self._save(serializer, serializer.instance)

    def perform_destroy(self, instance):
        type(self).delete_fn(instance, actor=self.request.user)


class ServiceViewSet(AuditedWrites, viewsets.ModelViewSet):
    """Inventory services: owner, environment, tier floor and hosts, with their resources."""

    queryset = Service.objects.prefetch_related("resources")
    serializer_class = ServiceSerializer
    permission_classes = [ModelPermissions]
    filterset_fields = ["name", "environment", "tier_floor"]
    save_fn = staticmethod(inventory.save_service)
    delete_fn = staticmethod(inventory.delete_service)


class ResourceViewSet(AuditedWrites, viewsets.ModelViewSet):
    """Inventory resources: the only things GRACE acts on."""

    queryset = Resource.objects.select_related("service")
    serializer_class = ResourceSerializer
    permission_classes = [ModelPermissions]
    filterset_fields = ["service__name", "kind", "host"]
    save_fn = staticmethod(inventory.save_resource)
    delete_fn = staticmethod(inventory.delete_resource)


class ChannelSerializer(CheckedModelSerializer):
    kind = serializers.ChoiceField(choices=ChannelKind.choices)
    services = serializers.SlugRelatedField(
        slug_field="name", many=True, queryset=Service.objects.all(), required=False
    )
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    token = serializers.SerializerMethodField(help_text="Only in the response that issues it; never stored.")

    def validate_kind(self, kind: str) -> str:
        if kind == ChannelKind.INTERNAL:
            raise serializers.ValidationError("internal channels are GRACE's own (sweeps, benchmarks, exceptions)")
        return kind

    class Meta:
        model = Channel
        fields = [
            "id",
            "name",
            "kind",
            "source",
            "owner",
            "all_services",
            "services",
            "enabled",
            "builtin",
            "token_hint",
            "token",
            "created_at",
        ]
        read_only_fields = ["builtin", "token_hint", "created_at"]

    def get_token(self, channel: Channel) -> str | None:
        return self.context.get("token")


api.answer(channels.ChannelKept, 409)


@extend_schema_view(destroy=extend_schema(responses={204: None, **api.statuses(409)}))
class ChannelViewSet(viewsets.ModelViewSet):
    """Intake channels. Creating one answers with its token, once; the owner is the user who creates it."""

    queryset = Channel.objects.select_related("owner").prefetch_related("services")
    serializer_class = ChannelSerializer
    permission_classes = [ModelPermissions]
    filterset_fields = ["kind", "source", "enabled", "builtin"]

    def _save(self, serializer, channel: Channel) -> Channel:
        data = dict(serializer.validated_data)
        services = data.pop("services", None)
        for name, value in data.items():
            setattr(channel, name, value)
        return channels.save(channel, services=services, actor=self.request.user)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel = self._save(serializer, Channel(owner=request.user if request.user.pk else None))
        token = channels.issue_token(channel, actor=request.user)
        body = ChannelSerializer(channel, context={"token": token}).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        serializer.instance = self._save(serializer, serializer.instance)

    def perform_destroy(self, instance):
        channels.delete(instance, actor=self.request.user)

    @extend_schema(request=None, responses=ChannelSerializer)
    @action(detail=True, methods=["post"])
    def token(self, request, pk=None):
        """Issue a new token (the old one stops working); it is in this response only."""
        channel = self.get_object()
        if not request.user.has_perm("incidents.change_channel"):
            return Response({"detail": "needs the incidents.change_channel permission"}, status=403)
        token = channels.issue_token(channel, actor=request.user)
        return Response(ChannelSerializer(channel, context={"token": token}).data)
