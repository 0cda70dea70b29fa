import django_filters
import redis
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from grace_site import api, handoff
from grace_site.api import ModelPermissions
from incidents.models import Incident
from remediation import lifecycle, pipeline, playbooks, resilience
from remediation.actions import registry
from remediation.api.serializers import (
    ActionSerializer,
    AgentSerializer,
    HealRequestSerializer,
    HealRunDetailSerializer,
    HealRunSerializer,
    PlaybookSerializer,
    ResilienceSerializer,
)
from remediation.choices import RunStatus
from remediation.models import Agent, HealRun, Playbook

api.answer(lifecycle.RollbackRefused, 409, "rollback refused: {exc}")


def _handoff_failed(incident_id: int, exc: Exception) -> api.Unavailable:
    """503 naming the run that was created but could not be handed to a worker (the reaper sends it again)."""
    run = HealRun.objects.filter(incident_id=incident_id).exclude(status__in=RunStatus.TERMINAL).first()
    created = f"run #{run.pk} was created ({run.status}) but " if run is not None else ""
    return api.Unavailable(
        f"{created}the hand-off to a worker failed: Redis is unavailable ({exc}). The reaper dispatches the run "
        "again once Redis is back."
    )


class HealRunFilter(django_filters.FilterSet):
    since = api.DateTimeFilter(field_name="created_at", lookup_expr="gte")
    service = django_filters.CharFilter(field_name="incident__service")
    playbook = django_filters.CharFilter(field_name="playbook__name")
    diagnosis = django_filters.CharFilter(field_name="diagnosis_code")

    class Meta:
        model = HealRun
        fields = ["status", "incident", "tier", "family", "target", "dry_run", "shadow"]


class HealRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Heal runs (missions): status, plan, timeline, attempts, contract results and snapshots."""

    queryset = HealRun.objects.select_related("incident", "playbook")
    # Reading runs needs view_healrun; cancel and roll back change a run: change_healrun.
    permission_classes = [api.ActionPermissions]
    action_permissions = {"cancel": ["remediation.change_healrun"], "rollback": ["remediation.change_healrun"]}
    filterset_class = HealRunFilter
    ordering_fields = ["created_at", "finished_at", "tier"]

    def get_queryset(self):
        qs = super().get_queryset()
        if self.action == "retrieve":
            qs = qs.prefetch_related("events", "attempts", "contract_results", "snapshots")
        return qs

    def get_serializer_class(self):
        return HealRunDetailSerializer if self.action == "retrieve" else HealRunSerializer

    @extend_schema(request=None, responses={200: HealRunSerializer, **api.statuses(409)})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self.get_object()
        if not lifecycle.cancel(run.pk, actor=request.user, reason=f"cancelled by {request.user.get_username()}"):
            raise api.Conflict(f"run is {run.status}: only a run that has not started executing can be cancelled")
        return Response(HealRunSerializer(HealRun.objects.get(pk=run.pk)).data)

    @extend_schema(request=None, responses={202: HealRunSerializer, **api.statuses(409, 503)})
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        with handoff.strict():  # 503 when the rollback cannot be handed to a worker (it stays ROLLING_BACK)
            run = lifecycle.operator_rollback(self.get_object().pk, actor=request.user)
        return Response(HealRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class HealIncidentView(APIView):
    """`POST /api/incidents/{id}/heal/`: start a run by hand (``dry_run`` plans and gates only).

    Needs incidents.view_incident (404 for any id without it) and remediation.add_healrun (403).
    With Redis down the run is created but cannot be handed on: 503 naming it; the reaper sends it again.
    """

    queryset = Incident.objects.all()
    permission_classes = [api.ActionPermissions]
    action_permissions = {"post": ["remediation.add_healrun"]}

    @extend_schema(request=HealRequestSerializer, responses={202: HealRunSerializer, **api.statuses(409, 503)})
    def post(self, request, pk: int):
        incident = get_object_or_404(Incident, pk=pk)
        body = HealRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            with handoff.strict():
                run = pipeline.start_run(
                    incident.pk, dry_run=body.validated_data["dry_run"], started_by=request.user, manual=True
                )
        except handoff.BROKER_ERRORS as exc:
            raise _handoff_failed(incident.pk, exc) from exc
        if run is None:
            raise api.Conflict(f"incident is {incident.status}: nothing to heal")
        if run.started_by_id != request.user.pk:
            return Response(
                {"detail": f"incident already has a live run #{run.pk} ({run.status})", "run": run.pk}, status=409
            )
        return Response(HealRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    update=extend_schema(responses={200: PlaybookSerializer, **api.statuses(503)}),
    partial_update=extend_schema(responses={200: PlaybookSerializer, **api.statuses(503)}),
    destroy=extend_schema(responses={204: None, **api.statuses(409)}),
)
class PlaybookViewSet(viewsets.ModelViewSet):
    """Playbooks: diagnosis codes to ordered, contract-checked steps. Changes are audited."""

    queryset = Playbook.objects.all()
    serializer_class = PlaybookSerializer
    permission_classes = [ModelPermissions]
    filterset_fields = ["enabled", "tier", "shadow"]

    def perform_create(self, serializer):
        playbook = Playbook(**serializer.validated_data)
        playbooks.save(playbook, actor=self.request.user)
        serializer.instance = playbook

    def perform_update(self, serializer):
        playbook = serializer.instance
        before = playbooks.snapshot(playbook)
        for name, value in serializer.validated_data.items():
            setattr(playbook, name, value)
        playbooks.save(playbook, actor=self.request.user, before=before)

    @extend_schema(responses={204: None, 409: dict})
    def destroy(self, request, *args, **kwargs):
        try:
            playbooks.delete(self.get_object(), actor=request.user)
        except playbooks.PlaybookInUse as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(summary="Registered actions with their parameter fields", responses={200: ActionSerializer(many=True)})
@api_view(["GET"])
@permission_classes([api.requires("remediation.view_playbook")])
def actions_catalogue(request):
    return Response(
        [
            {
                "name": a.name,
                "family": a.family,
                "tier": a.tier,
                "idempotent": a.idempotent,
                "reversible": a.reversible,
                "timeout": a.timeout,
                "description": a.description,
                "params": {name: type(f).__name__ for name, f in a.params().fields.items()},
            }
            for a in registry.all()
        ]
    )


@extend_schema(
    summary="Open circuit breakers and spent rate limits per (action, target)",
    responses={200: ResilienceSerializer, **api.statuses(503)},
)
@api_view(["GET"])
@permission_classes([api.requires("remediation.view_healrun")])
def resilience_status(request):
    try:
        return Response({"breakers": resilience.open_breakers(), "rate_limits": resilience.spent_limits()})
    except redis.RedisError as exc:
        raise api.Unavailable(f"breaker and rate-limit state is unavailable: Redis: {exc}") from exc


class BreakerResetSerializer(serializers.Serializer):
    action = serializers.CharField(max_length=100)
    target = serializers.CharField(max_length=300)


class BreakerResetResultSerializer(BreakerResetSerializer):
    reset = serializers.BooleanField(help_text="False when the breaker was already closed.")


@extend_schema(
    summary="Close a circuit breaker (audited)",
    request=BreakerResetSerializer,
    responses={200: BreakerResetResultSerializer, **api.statuses(503)},
)
@api_view(["POST"])
@permission_classes([api.requires("remediation.change_healrun")])
def resilience_reset(request):
    body = BreakerResetSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    if body.validated_data["action"] not in registry:
        raise ValidationError({"action": [f"unknown action {body.validated_data['action']!r}"]})
    reset = resilience.reset_breaker(body.validated_data["action"], body.validated_data["target"], actor=request.user)
    return Response({"reset": reset, **body.validated_data})


class AgentViewSet(viewsets.ReadOnlyModelViewSet):
    """The fleet's agents: the host each acts on, the queues it consumes, its GRACE_VAR_DIR and last report."""

    queryset = Agent.objects.all()
    serializer_class = AgentSerializer
    permission_classes = [ModelPermissions]
    filterset_fields = ["host"]
