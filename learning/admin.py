"""Admin: read-only outcomes and statistics with recommendations and charts; editable benchmark suites."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from grace_site import links
from grace_site.admin import AuditedAdmin, ReadOnlyAdmin, ReadOnlyInline
from grace_site.templatetags.grace import duration, fact, ms_datetime, sig
from learning import analytics, benchmarks, services
from learning.charts import Point, line_chart
from learning.choices import BenchmarkRunStatus, Outcome, Trigger
from learning.models import BenchmarkResult, BenchmarkRun, BenchmarkSuite, OutcomeRecord, PlaybookStatistics

GOOD, BAD, WARN, QUIET = "#1a7f37", "#cf222e", "#9a6700", "#6e7781"
OUTCOME_COLOURS = {
    Outcome.SUCCEEDED: GOOD,
    Outcome.FAILED: BAD,
    Outcome.ROLLED_BACK: WARN,
    Outcome.ESCALATED: BAD,
    Outcome.REJECTED: BAD,
    Outcome.EXPIRED: BAD,
    Outcome.BLOCKED: WARN,
    Outcome.CANCELLED: QUIET,
    Outcome.SIMULATED: QUIET,
}
RUN_COLOURS = {BenchmarkRunStatus.PASSED: GOOD, BenchmarkRunStatus.REGRESSED: BAD, BenchmarkRunStatus.FAILED: WARN}


def _coloured(text: str, colour: str) -> str:
    return format_html('<b style="color:{}">{}</b>', colour, text)


def _stamp(value) -> str:
    return timezone.localtime(value).strftime("%m-%d %H:%M:%S") if value else "-"


def verdict(result: BenchmarkResult) -> str:
    """What the result means, in words and colours that say it: within (green), over once (amber), regression."""
    if not result.ok:
        return _coloured(f"check failed: {result.error[:80]}", WARN)
    judged = (result.details or {}).get("judgement", {})
    if result.baseline_samples == 0 or result.threshold is None:
        return format_html(
            '<span style="color:{}">no judgement yet: needs {} earlier results</span>',
            QUIET,
            settings.GRACE_BENCH_MIN_SAMPLES + settings.GRACE_BENCH_PERSIST_N - 1,
        )
    window = f"{judged.get('recent_over', '?')} of the last {judged.get('window', '?')} runs over"
    if result.regression:
        return _coloured(f"regression ({window})", BAD)
    if judged.get("over_threshold"):
        return _coloured(f"over the threshold, not yet a regression ({window}, {judged.get('needed')} needed)", WARN)
    return _coloured("within the baseline", GOOD)


@admin.register(OutcomeRecord)
class OutcomeRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "run_link",
        "outcome_shown",
        "finished",
        "service",
        "diagnosis_code",
        "playbook",
        "tier",
        "took",
        "counted",
    )
    list_display_links = ("outcome_shown",)
    list_filter = ("outcome", "counted", "shadow", "tier", "diagnosis_code", ("finished_at", admin.DateFieldListFilter))
    search_fields = ("service", "target", "playbook", "diagnosis_code", "=run__id", "=incident__id")
    date_hierarchy = "finished_at"
    show_full_result_count = False
    fields = (
        "run_link",
        "outcome_shown",
        "incident",
        "service",
        "target",
        "diagnosis_code",
        "playbook",
        "tier",
        "shadow",
        "counted",
        "started_at",
        "finished_at",
        "took",
        "resolve",
        "stages",
        "contract",
    )
    readonly_fields = fields

    @admin.display(description="run", ordering="run_id")
    def run_link(self, obj: OutcomeRecord) -> str:
        url = links.ask("run_url", obj.run_id, default="")
        return format_html('<a href="{}">#{}</a>', url, obj.run_id) if url else f"#{obj.run_id}"

    @admin.display(description="outcome", ordering="outcome")
    def outcome_shown(self, obj: OutcomeRecord) -> str:
        return _coloured(obj.get_outcome_display(), OUTCOME_COLOURS.get(obj.outcome, QUIET))

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: OutcomeRecord) -> str:
        return _stamp(obj.finished_at)

    @admin.display(description="took", ordering="duration_seconds")
    def took(self, obj: OutcomeRecord) -> str:
        return duration(obj.duration_seconds)

    @admin.display(description="first signal to end")
    def resolve(self, obj: OutcomeRecord) -> str:
        return duration(obj.resolve_seconds)

    @admin.display(description="time per stage")
    def stages(self, obj: OutcomeRecord) -> str:
        rows = ((stage, duration(seconds)) for stage, seconds in (obj.stage_durations or {}).items())
        return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))

    @admin.display(description="contract results")
    def contract(self, obj: OutcomeRecord) -> str:
        rows = (
            (
                r.get("step_index"),
                r.get("field"),
                r.get("operator"),
                fact(r.get("expected")),
                fact(r.get("actual")),
                "held" if r.get("passed") else "did not hold",
            )
            for r in obj.contract_results or []
        )
        body = format_html_join("", "<tr><td>{}</td><td>{} {} {}</td><td>actual {}</td><td>{}</td></tr>", rows)
        return format_html("<table>{}</table>", body) if obj.contract_results else "-"


@admin.register(PlaybookStatistics)
class PlaybookStatisticsAdmin(ReadOnlyAdmin):
    list_display = (
        "playbook",
        "diagnosis_code",
        "record",
        "rollbacks",
        "failures",
        "streak",
        "confidence_display",
        "posterior_display",
        "last",
        "chart_link",
    )
    list_filter = ("diagnosis_code", "last_outcome")
    search_fields = ("playbook", "diagnosis_code")
    change_list_template = "admin/learning/playbookstatistics/change_list.html"

    @admin.display(description="succeeded", ordering="successes")
    def record(self, obj: PlaybookStatistics) -> str:
        return f"{obj.successes} of {obj.attempts}"

    @admin.display(description="streak", ordering="consecutive_failures")
    def streak(self, obj: PlaybookStatistics) -> int:
        return obj.consecutive_failures

    @admin.display(description="confidence")
    def confidence_display(self, obj: PlaybookStatistics) -> str:
        value = services.confidence_from(obj.successes, obj.attempts)
        if value < services.CONFIDENCE_TIER_THRESHOLD:
            return format_html(
                '<span style="color:{}" title="below the threshold: raises the tier">{} (raises the tier)</span>',
                WARN,
                f"{value:.2f}",
            )
        return f"{value:.2f}"

    @admin.display(description="posterior")
    def posterior_display(self, obj: PlaybookStatistics) -> str:
        return f"{services.evidence(obj)['posterior_mean']:.2f}"

    @admin.display(description="last outcome", ordering="last_outcome_at")
    def last(self, obj: PlaybookStatistics) -> str:
        if not obj.last_outcome:
            return "-"
        colour = OUTCOME_COLOURS.get(obj.last_outcome, QUIET)
        return format_html('<span style="color:{}">{}</span> {}', colour, obj.last_outcome, _stamp(obj.last_outcome_at))

    @admin.display(description="chart")
    def chart_link(self, obj: PlaybookStatistics) -> str:
        return format_html('<a href="{}">over time</a>', reverse("admin:learning_playbook_chart", args=[obj.pk]))

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


class BenchmarkResultInline(ReadOnlyInline):
    model = BenchmarkResult
    fields = ("metric", "value_shown", "baseline_shown", "threshold_shown", "verdict_shown", "incident_link")
    readonly_fields = fields
    verbose_name_plural = "results"

    @admin.display(description="value")
    def value_shown(self, obj: BenchmarkResult) -> str:
        return f"{sig(obj.value)} {obj.unit}" if obj.value is not None else "-"

    @admin.display(description="baseline median")
    def baseline_shown(self, obj: BenchmarkResult) -> str:
        if obj.baseline_median is None:
            return "-"
        return f"{sig(obj.baseline_median)} {obj.unit} (MAD {sig(obj.baseline_mad)}, {obj.baseline_samples} runs)"

    @admin.display(description="threshold")
    def threshold_shown(self, obj: BenchmarkResult) -> str:
        if obj.threshold is None:
            return "-"
        return f"{'below' if obj.higher_is_better else 'above'} {sig(obj.threshold)} {obj.unit}"

    @admin.display(description="verdict")
    def verdict_shown(self, obj: BenchmarkResult) -> str:
        return verdict(obj)

    @admin.display(description="incident")
    def incident_link(self, obj: BenchmarkResult) -> str:
        if not obj.incident_id:
            return "-"
        url = reverse("admin:incidents_incident_change", args=[obj.incident_id])
        return format_html('<a href="{}">#{}</a>', url, obj.incident_id)


@admin.register(BenchmarkRun)
class BenchmarkRunAdmin(ReadOnlyAdmin):
    list_display = ("run", "suite", "status_shown", "trigger", "started", "took", "failed_checks", "regression_count")
    list_display_links = ("run",)
    list_filter = ("status", "suite", "trigger", ("created_at", admin.DateFieldListFilter))
    inlines = [BenchmarkResultInline]
    list_select_related = ("suite",)
    show_full_result_count = False
    fields = ("suite", "status_shown", "trigger", "queued", "finished", "took", "failed_checks", "regression_count")
    readonly_fields = fields

    @admin.display(description="run", ordering="id")
    def run(self, obj: BenchmarkRun) -> str:
        return f"#{obj.pk}"

    @admin.display(description="status", ordering="status")
    def status_shown(self, obj: BenchmarkRun) -> str:
        return _coloured(obj.status, RUN_COLOURS.get(obj.status, QUIET))

    @admin.display(description="started", ordering="created_at")
    def started(self, obj: BenchmarkRun) -> str:
        return _stamp(obj.started_at or obj.created_at)

    @admin.display(description="queued")
    def queued(self, obj: BenchmarkRun) -> str:
        return ms_datetime(obj.created_at)

    @admin.display(description="finished")
    def finished(self, obj: BenchmarkRun) -> str:
        return ms_datetime(obj.finished_at)

    @admin.display(description="took", ordering="duration_ms")
    def took(self, obj: BenchmarkRun) -> str:
        return f"{sig(obj.duration_ms)} ms" if obj.duration_ms is not None else "-"


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
                label=f"run {r.run_id}",
                value=r.value if r.ok else None,
                band=(r.baseline_median, r.threshold) if r.threshold is not None else None,
                alert=r.regression,
                warn=bool(r.ok and (r.details or {}).get("judgement", {}).get("over_threshold")) and not r.regression,
            )
            for r in rows
        ]
        charts.append(line_chart(points, title=metric, unit=rows[-1].unit))
    return charts


def chart_legend() -> str:
    needed = settings.GRACE_BENCH_MIN_SAMPLES + settings.GRACE_BENCH_PERSIST_N - 1
    return (
        "Blue line: each run's value. Shaded band: from the baseline median to the regression threshold, drawn from "
        f"the run where a metric first has {needed} earlier results (no judgement before). Amber dot: over the "
        f"threshold in one run, not a regression. Red dot: a regression (over it in {settings.GRACE_BENCH_PERSIST_K} "
        f"of the last {settings.GRACE_BENCH_PERSIST_N} runs), which opens an incident."
    )


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
            "legend": chart_legend(),
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
