"""Learning and verification API: thin views over learning.services, .analytics and .benchmarks."""

from __future__ import annotations

from dataclasses import asdict

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from grace_site import api
from grace_site.api import ModelPermissions
from learning import analytics, benchmarks, services
from learning.api.serializers import BenchmarkRunSerializer, RecommendationsSerializer, StatisticsSerializer
from learning.choices import BenchmarkRunStatus
from learning.models import BenchmarkRun, BenchmarkSuite, OutcomeRecord, PlaybookStatistics


class StatisticsQuery(serializers.Serializer):
    _text = {"required": False, "default": "", "allow_blank": True, "trim_whitespace": False}
    diagnosis = serializers.CharField(**_text, help_text="Diagnosis code")
    playbook = serializers.CharField(**_text, help_text="Playbook name")
    service = serializers.CharField(**_text, help_text="Only outcomes of this service")


class StatisticsView(generics.ListAPIView):
    """Playbook statistics per (diagnosis, playbook); ``service=`` aggregates that service's outcomes."""

    serializer_class = StatisticsSerializer
    permission_classes = [ModelPermissions]
    queryset = PlaybookStatistics.objects.all()
    filter_backends: list = []

    @extend_schema(parameters=[StatisticsQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        query = StatisticsQuery(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return analytics.statistics(**query.validated_data)


class RecommendationsQuery(serializers.Serializer):
    diagnosis = serializers.CharField(max_length=64)
    candidates = serializers.CharField(required=False, help_text="Comma-separated playbook names")


class RecommendationsView(APIView):
    """Playbooks for a diagnosis, best first, with the evidence behind each score."""

    permission_classes = [ModelPermissions]
    queryset = PlaybookStatistics.objects.none()

    @extend_schema(parameters=[RecommendationsQuery], responses={200: RecommendationsSerializer})
    def get(self, request):
        query = RecommendationsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        diagnosis = query.validated_data["diagnosis"]
        raw = query.validated_data.get("candidates")
        candidates = [c.strip() for c in raw.split(",") if c.strip()] if raw else services.candidates_for(diagnosis)
        ranked = services.recommend(diagnosis, candidates)
        return Response(
            {
                "diagnosis": diagnosis,
                "thresholds": {
                    "confidence_tier_threshold": services.CONFIDENCE_TIER_THRESHOLD,
                    "pause_after_failures": services.PAUSE_AFTER_FAILURES,
                    "min_attempts_for_confidence": services.MIN_ATTEMPTS_FOR_CONFIDENCE,
                },
                "recommendations": [asdict(r) for r in ranked],
            }
        )


class AnalyticsQuery(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=366, default=30)
    service = serializers.CharField(required=False, default="", allow_blank=True)


class AnalyticsView(APIView):
    """MTTR, success rate over time, auto-resolved versus escalated, overall and per service."""

    permission_classes = [ModelPermissions]
    queryset = OutcomeRecord.objects.none()

    @extend_schema(parameters=[AnalyticsQuery], responses={200: dict})
    def get(self, request):
        query = AnalyticsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(analytics.analytics(**query.validated_data))


class VerificationStatusView(APIView):
    """Latest run of every suite and the open benchmark-regression incidents."""

    permission_classes = [ModelPermissions]
    queryset = BenchmarkRun.objects.none()

    @extend_schema(responses={200: dict})
    def get(self, request):
        status = benchmarks.verification_status()
        return Response(
            {
                "suites": [
                    {
                        "suite": entry.suite.name,
                        "enabled": entry.suite.enabled,
                        "latest": BenchmarkRunSerializer(entry.latest).data if entry.latest else None,
                    }
                    for entry in status.suites
                ],
                "open_regressions": [
                    {
                        "incident": i.pk,
                        "title": i.title,
                        "status": i.status,
                        "suite": i.labels.get("suite"),
                        "metric": i.labels.get("metric"),
                        "value": i.labels.get("value"),
                        "baseline": i.labels.get("baseline"),
                        "occurrences": i.occurrences,
                        "first_seen": i.first_seen,
                        "last_seen": i.last_seen,
                    }
                    for i in status.open_regressions
                ],
            }
        )


class WaitQuery(serializers.Serializer):
    wait = serializers.BooleanField(default=False)
    timeout = serializers.FloatField(min_value=0.1, required=False)


def _wait_and_respond(run: BenchmarkRun, query: WaitQuery) -> Response:
    if query.validated_data["wait"]:
        limit = settings.GRACE_BENCH_WAIT_TIMEOUT
        run = benchmarks.wait(run, min(query.validated_data.get("timeout", limit), limit))
    finished = run.status in BenchmarkRunStatus.FINISHED
    body = BenchmarkRunSerializer(run).data
    body["run_id"] = run.pk
    return Response(body, status=status.HTTP_200_OK if finished else status.HTTP_202_ACCEPTED)


class BenchmarkStartView(APIView):
    """Queue a run of a suite (``smoke`` or ``full``): 202 with the run id, or the results with ``?wait=true``."""

    permission_classes = [ModelPermissions]
    queryset = BenchmarkRun.objects.none()

    @extend_schema(
        request=None,
        parameters=[WaitQuery],
        responses={
            200: OpenApiResponse(BenchmarkRunSerializer, description="``?wait=true`` and the run has finished."),
            202: OpenApiResponse(BenchmarkRunSerializer, description="Queued (or still running after the wait)."),
            404: api.error("No benchmark suite of that name."),
            409: OpenApiResponse(OpenApiTypes.OBJECT, description='The suite is disabled: {"suite": "..."}.'),
            503: api.error("Redis is unavailable: the run was created and marked failed with the reason."),
        },
    )
    def post(self, request, suite: str):
        query = WaitQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            run = benchmarks.dispatch(suite, actor=request.user)
        except BenchmarkSuite.DoesNotExist as exc:
            raise NotFound(str(exc)) from None
        except DjangoValidationError as exc:
            return Response(exc.message_dict, status=status.HTTP_409_CONFLICT)
        except benchmarks.HandoffFailed as exc:
            raise api.Unavailable(str(exc)) from exc
        return _wait_and_respond(run, query)


class BenchmarkRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Benchmark runs with their results, newest first; ``GET .../<id>/?wait=true`` waits for a queued run."""

    queryset = BenchmarkRun.objects.select_related("suite").prefetch_related("results")
    serializer_class = BenchmarkRunSerializer
    permission_classes = [ModelPermissions]
    filterset_fields = ["status", "trigger", "suite__name"]
    ordering_fields = ["created_at"]

    @extend_schema(
        parameters=[WaitQuery],
        responses={
            200: OpenApiResponse(BenchmarkRunSerializer, description="The run has finished."),
            202: OpenApiResponse(BenchmarkRunSerializer, description="The run is still queued or running."),
        },
    )
    def retrieve(self, request, *args, **kwargs):
        query = WaitQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        return _wait_and_respond(self.get_object(), query)
