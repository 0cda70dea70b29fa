"""Admin: read-only outcomes and statistics with recommendations and charts; editable benchmark suites."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from grace_site.admin import AuditedAdmin, ReadOnlyAdmin
from learning import analytics, benchmarks, services
from learning.charts import Point, line_chart
from learning.choices import Trigger
from learning.models import BenchmarkResult, BenchmarkRun, BenchmarkSuite, OutcomeRecord, PlaybookStatistics


@admin.register(OutcomeRecord)
class OutcomeRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "run",
        "finished_at",
        "service",
        "target",
        "diagnosis_code",
        "playbook",
        "outcome",
        "tier",
        "counted",
        "duration_seconds",
    )
    list_filter = ("outcome", "counted", "shadow", "tier", "diagnosis_code", ("finished_at", admin.DateFieldListFilter))
    search_fields = ("service", "target", "playbook", "diagnosis_code", "=run__id", "=incident__id")
    date_hierarchy = "finished_at"
    list_select_related = ("run",)
    show_full_result_count = False


@admin.register(PlaybookStatistics)
class PlaybookStatisticsAdmin(ReadOnlyAdmin):
    list_display = (
        "playbook",
        "diagnosis_code",
        "attempts",
        "successes",
        "failures",
        "rollbacks",
        "consecutive_failures",
        "confidence_display",
        "posterior_display",
        "last_outcome",
        "last_outcome_at",
        "chart_link",
    )
    list_filter = ("diagnosis_code", "last_outcome")
    search_fields = ("playbook", "diagnosis_code")
    change_list_template = "admin/learning/playbookstatistics/change_list.html"

    @admin.display(description="confidence")
    def confidence_display(self, obj: PlaybookStatistics) -> str:
        value = services.confidence_from(obj.successes, obj.attempts)
        flag = " (raises the tier)" if value < services.CONFIDENCE_TIER_THRESHOLD else ""
        return f"{value:.3f}{flag}"

    @admin.display(description="posterior mean")
    def posterior_display(self, obj: PlaybookStatistics) -> str:
        return f"{services.evidence(obj)['posterior_mean']:.3f}"

    @admin.display(description="chart")
    def chart_link(self, obj: PlaybookStatistics) -> str:
        return format_html(
            '<a href="{}">success over time</a>', reverse("admin:learning_playbook_chart", args=[obj.pk])
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        extra = [
            path("recommendations/", view(self.recommendations_view), name="learning_recommendations"),
            path("rebuild/", view(require_POST(self.rebuild_view)), name="learning_rebuild_statistics"),
            path("<int:pk>/chart/", view(self.chart_view), name="learning_playbook_chart"),
        ]
        return extra + super().get_urls()

    def has_rebuild_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("learning.change_playbookstatistics")

    def rebuild_view(self, request: HttpRequest):
        if not self.has_rebuild_permission(request):
            raise PermissionDenied
        rows = services.rebuild_statistics(actor=request.user)
        self.message_user(request, f"Rebuilt {rows} statistics rows from the outcome records.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:learning_playbookstatistics_changelist"))

    def recommendations_view(self, request: HttpRequest):
        if not self.has_view_permission(request):
            raise PermissionDenied
        diagnoses = services.known_diagnoses()
        diagnosis = request.GET.get("diagnosis") or (diagnoses[0] if diagnoses else "")
        # The enabled playbooks of the diagnosis, and any playbook with evidence for it (even if paused now).
        with_evidence = PlaybookStatistics.objects.filter(diagnosis_code=diagnosis).values_list("playbook", flat=True)
        candidates = [*services.candidates_for(diagnosis), *with_evidence]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Playbook recommendations",
            "diagnoses": diagnoses,
            "diagnosis": diagnosis,
            "recommendations": services.recommend(diagnosis, candidates) if diagnosis else [],
            "threshold": services.CONFIDENCE_TIER_THRESHOLD,
            "pause_after": services.PAUSE_AFTER_FAILURES,
            "min_attempts": services.MIN_ATTEMPTS_FOR_CONFIDENCE,
        }
        return TemplateResponse(request, "admin/learning/recommendations.html", context)

    def chart_view(self, request: HttpRequest, pk: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        stats = get_object_or_404(PlaybookStatistics, pk=pk)
        series = analytics.success_series(stats.diagnosis_code, stats.playbook)
        chart = line_chart(
            [Point(str(row["date"]), row["success_rate"] * 100) for row in series],
            title=f"{stats.playbook} for {stats.diagnosis_code}: daily success rate",
            unit="%",
            y_min=0,
            y_max=100,
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Success rate over time: {stats.playbook} ({stats.diagnosis_code})",
            "charts": [chart],
            "evidence": services.evidence(stats),
        }
        return TemplateResponse(request, "admin/learning/charts.html", context)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "recommendations_url": reverse("admin:learning_recommendations"),
            "rebuild_url": reverse("admin:learning_rebuild_statistics"),
            "can_rebuild": self.has_rebuild_permission(request),
        }
        return super().changelist_view(request, extra_context)


class BenchmarkResultInline(admin.TabularInline):
    model = BenchmarkResult
    fields = ("metric", "ok", "value", "unit", "baseline_median", "threshold", "regression", "error", "incident")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(BenchmarkRun)
class BenchmarkRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "suite",
        "status",
        "trigger",
        "created_at",
        "duration_ms",
        "failed_checks",
        "regression_count",
    )
    list_filter = ("status", "suite", "trigger", ("created_at", admin.DateFieldListFilter))
    inlines = [BenchmarkResultInline]
    list_select_related = ("suite",)


def metric_charts(suite: BenchmarkSuite, *, runs: int = 60) -> list:
    """One chart per metric of the suite's last runs: value, baseline band (median to threshold), regressions."""
    recent = list(
        BenchmarkRun.objects.filter(suite=suite).order_by("-created_at", "-pk").values_list("pk", flat=True)[:runs]
    )
    results = BenchmarkResult.objects.filter(run_id__in=recent).order_by("run__created_at", "run_id", "pk")
    by_metric: dict[str, list[BenchmarkResult]] = {}
    for result in results:
        by_metric.setdefault(result.metric, []).append(result)
    charts = []
    for metric, rows in sorted(by_metric.items()):
        points = [
            Point(
                label=f"#{r.run_id}",
                value=r.value if r.ok else None,
                band=(r.baseline_median, r.threshold) if r.threshold is not None else None,
                alert=r.regression,
            )
            for r in rows
        ]
        charts.append(line_chart(points, title=metric, unit=rows[-1].unit))
    return charts


@admin.register(BenchmarkSuite)
class BenchmarkSuiteAdmin(AuditedAdmin):
    list_display = ("name", "enabled", "description", "charts_link")
    actions = ["run_now"]

    @admin.display(description="charts")
    def charts_link(self, obj: BenchmarkSuite) -> str:
        return format_html('<a href="{}">metrics over time</a>', reverse("admin:learning_suite_charts", args=[obj.pk]))

    def get_urls(self):
        extra = [path("<int:pk>/charts/", self.admin_site.admin_view(self.charts_view), name="learning_suite_charts")]
        return extra + super().get_urls()

    def charts_view(self, request: HttpRequest, pk: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        suite = get_object_or_404(BenchmarkSuite, pk=pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Benchmark suite {suite.name}: metrics over time",
            "charts": metric_charts(suite),
            "legend": "Blue band: from the rolling baseline median to the regression threshold. Red: a regression.",
        }
        return TemplateResponse(request, "admin/learning/charts.html", context)

    @admin.action(description="Run the selected suites now (on a worker)", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        for suite in queryset:
            try:
                run = benchmarks.dispatch(suite.name, actor=request.user, trigger=Trigger.MANUAL)
            except benchmarks.HandoffFailed as exc:
                self.message_user(request, f"{suite.name}: {exc}", messages.ERROR)
                continue
            self.message_user(request, f"Queued run #{run.pk} of {suite.name}.", messages.SUCCESS)
