"""Heal runs in the admin: a list that shows why each run ended, and a read-only run page (timeline first).

Nothing on a run is edited by hand: the run page is a view page, and what a person can do about a run (approve,
retry, cancel, roll back, start a new run) are buttons that call the same lifecycle functions as the actions of
the list and the API.
"""

from __future__ import annotations

import redis
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator
from django.views.decorators.http import require_POST

from grace_site.templatetags.grace import duration
from remediation import lifecycle, pipeline, resilience, run_page
from remediation.choices import RunStatus
from remediation.models import HealRun

S = RunStatus
GOOD, BAD, WARN, INFO = "#1a7f37", "#cf222e", "#9a6700", "#0969da"
STATUS_COLOURS = {
    S.SUCCEEDED: GOOD,
    S.ROLLED_BACK: WARN,
    S.FAILED: BAD,
    S.ESCALATED: BAD,
    S.BLOCKED: WARN,
    S.REJECTED: BAD,
    S.EXPIRED: BAD,
    S.AWAITING_APPROVAL: INFO,
    S.SIMULATED: "#6e7781",
    S.CANCELLED: "#6e7781",
}
OPS = {
    "retry": "retry the current stage",
    "cancel": "cancel",
    "rollback": "roll back from the snapshots",
    "rerun": "start a new run for the incident",
}


def coloured(status: str) -> str:
    return format_html('<b style="color:{}">{}</b>', STATUS_COLOURS.get(status, "inherit"), status)


class FinishedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("moving", "in flight"),
            ("waiting", "waiting for approval"),
            ("stopped", "stopped short"),
            ("finished", "finished"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "moving":
            return queryset.filter(status__in=S.ACTIVE)
        if value == "waiting":
            return queryset.filter(status__in=S.WAITING)
        if value == "stopped":
            return queryset.filter(status__in=(S.ESCALATED, S.BLOCKED, S.FAILED, S.ROLLED_BACK, S.REJECTED, S.EXPIRED))
        if value == "finished":
            return queryset.filter(status__in=S.TERMINAL)
        return queryset


@admin.register(HealRun)
class HealRunAdmin(admin.ModelAdmin):
    list_display = (
        "run",
        "status_shown",
        "service",
        "diagnosis_code",
        "playbook_name",
        "tier",
        "target_short",
        "started",
        "took",
        "reason",
    )
    list_display_links = None
    list_filter = (FinishedFilter, "status", "tier", "family", "diagnosis_code", "dry_run", "shadow")
    search_fields = ("=id", "incident__title", "incident__service", "target", "status_reason")
    date_hierarchy = "created_at"
    list_select_related = ("incident", "playbook")
    list_per_page = 50
    show_full_result_count = False
    actions = ["retry_stage", "cancel_runs", "roll_back_runs"]

    # --- the list ------------------------------------------------------------------------------------------

    @admin.display(description="run", ordering="id")
    def run(self, obj: HealRun) -> str:
        return format_html('<a href="{}">#{}</a>', reverse("admin:remediation_healrun_change", args=[obj.pk]), obj.pk)

    @admin.display(description="status", ordering="status")
    def status_shown(self, obj: HealRun) -> str:
        return coloured(obj.status)

    @admin.display(description="service", ordering="incident__service")
    def service(self, obj: HealRun) -> str:
        return obj.incident.service or "-"

    @admin.display(description="playbook", ordering="playbook__name")
    def playbook_name(self, obj: HealRun) -> str:
        return obj.playbook.name if obj.playbook else "-"

    @admin.display(description="target", ordering="target")
    def target_short(self, obj: HealRun) -> str:
        if not obj.target:
            return "-"
        return format_html('<span title="{}">{}</span>', obj.target, Truncator(obj.target).chars(34))

    @admin.display(description="started", ordering="created_at")
    def started(self, obj: HealRun) -> str:
        return timezone.localtime(obj.created_at).strftime("%m-%d %H:%M:%S")

    @admin.display(description="took")
    def took(self, obj: HealRun) -> str:
        if obj.finished_at:
            return duration((obj.finished_at - obj.created_at).total_seconds())
        return "waiting" if obj.status in S.WAITING else "running"

    @admin.display(description="why it ended (or waits)")
    def reason(self, obj: HealRun) -> str:
        text = obj.status_reason or ""
        if obj.status == S.SUCCEEDED and not text:
            text = "healed: its contract held" if obj.verification_confidence == 1 else "healed"
        elif obj.status in S.WAITING and not text:
            text = f"waits for {obj.tier - 1} approval(s): tier {obj.tier}"
        if not text:
            return "-" if obj.status in S.TERMINAL else "in progress"
        return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(90))

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # No run is edited by hand: its page is a view page. Without an object this is the permission the
        # list's actions and the page's buttons need (retry, cancel, roll back).
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Heal runs", **(extra_context or {})})

    # --- the run page ----------------------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("resilience/", view(self.resilience_view), name="remediation_resilience"),
            path("<int:pk>/act/", view(require_POST(self.act_view)), name="remediation_healrun_act"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = (
            HealRun.objects.select_related("incident__channel", "playbook", "started_by").filter(pk=object_id).first()
            if str(object_id).isdigit()
            else None
        )
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        page = run_page.build(run)
        can_act = self.has_change_permission(request)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"View heal run #{run.pk}",
            "original": run,
            "run": run,
            "page": page,
            "status": coloured(run.status),
            "steps": (run.plan or {}).get("steps", []),
            "contract_results": list(run.contract_results.order_by("step_index", "pk")),
            "attempts": list(run.attempts.order_by("step_index", "phase", "attempt")),
            "snapshots": list(run.snapshots.order_by("step_index")),
            "ops": {step.op for step in page.next_steps if step.op} if can_act else set(),
            "can_act": can_act,
            "has_view_permission": True,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/remediation/healrun/run.html", context)

    def act_view(self, request, pk: int):
        """A button of the run page: the same lifecycle calls as the list's actions, audited by them."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        run = get_object_or_404(HealRun, pk=pk)
        op = request.POST.get("op", "")
        here = reverse("admin:remediation_healrun_change", args=[run.pk])
        if op == "retry":
            done = lifecycle.retry_stage(run, actor=request.user)
            self.message_user(
                request,
                f"run #{run.pk}: stage {run.status} dispatched again"
                if done
                else f"run #{run.pk} is {run.status}: nothing to retry",
                messages.SUCCESS if done else messages.WARNING,
            )
        elif op == "cancel":
            done = lifecycle.cancel(run.pk, actor=request.user, reason=f"cancelled by {request.user} in the admin")
            self.message_user(
                request,
                f"run #{run.pk} cancelled" if done else f"run #{run.pk} is {run.status}: too late to cancel",
                messages.SUCCESS if done else messages.WARNING,
            )
        elif op == "rollback":
            try:
                lifecycle.operator_rollback(run.pk, actor=request.user)
            except lifecycle.RollbackRefused as exc:
                self.message_user(request, f"run #{run.pk}: rollback refused: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"run #{run.pk}: rolling back from verified snapshots", messages.SUCCESS)
        elif op == "rerun":
            if not request.user.has_perm("remediation.add_healrun"):
                raise PermissionDenied("starting a run needs the remediation.add_healrun permission")
            new = pipeline.start_run(run.incident_id, started_by=request.user, manual=True)
            if new is None:
                self.message_user(request, f"incident #{run.incident_id} is closed: nothing to heal", messages.WARNING)
            elif new.started_by_id != request.user.pk:
                self.message_user(request, f"incident #{run.incident_id} already has run #{new.pk}", messages.WARNING)
            else:
                self.message_user(request, f"run #{new.pk} started for incident #{run.incident_id}", messages.SUCCESS)
                here = reverse("admin:remediation_healrun_change", args=[new.pk])
        else:
            self.message_user(request, f"unknown operation {op!r}", messages.ERROR)
        return HttpResponseRedirect(here)

    def resilience_view(self, request):
        """Open circuit breakers and spent rate limits, with an audited reset."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        can_reset = self.has_change_permission(request)
        if request.method == "POST":
            if not can_reset:
                raise PermissionDenied
            action, target = request.POST.get("action", ""), request.POST.get("target", "")
            if resilience.reset_breaker(action, target, actor=request.user):
                self.message_user(request, f"breaker {action} on {target} reset")
            return redirect("admin:remediation_resilience")
        context = {
            **self.admin_site.each_context(request),
            "title": "Circuit breakers and rate limits",
            "can_reset": can_reset,
            "breakers": [],
            "limits": [],
        }
        try:
            context.update(breakers=resilience.open_breakers(), limits=resilience.spent_limits())
        except redis.RedisError as exc:
            context["error"] = f"breaker and rate-limit state is unavailable: Redis: {exc}"
        return TemplateResponse(request, "admin/remediation/resilience.html", context)

    # --- the list's actions ----------------------------------------------------------------------------------

    @admin.action(description="Retry the current stage of the selected runs", permissions=["change"])
    def retry_stage(self, request, queryset):
        retried = sum(lifecycle.retry_stage(run, actor=request.user) for run in queryset)
        self.message_user(
            request, f"{retried} run(s) dispatched again; finished, waiting or moving runs were left alone."
        )

    @admin.action(description="Cancel the selected runs (before they execute)", permissions=["change"])
    def cancel_runs(self, request, queryset):
        done = [
            run.pk
            for run in queryset
            if lifecycle.cancel(run.pk, actor=request.user, reason=f"cancelled by {request.user} in the admin")
        ]
        skipped = queryset.count() - len(done)
        self.message_user(
            request,
            f"cancelled {len(done)} run(s); {skipped} were already executing or finished.",
            messages.SUCCESS if done else messages.WARNING,
        )

    @admin.action(description="Roll back the selected finished runs from their snapshots", permissions=["change"])
    def roll_back_runs(self, request, queryset):
        for run in queryset:
            try:
                lifecycle.operator_rollback(run.pk, actor=request.user)
            except lifecycle.RollbackRefused as exc:
                self.message_user(request, f"run #{run.pk}: rollback refused: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"run #{run.pk}: rolling back from verified snapshots", messages.SUCCESS)
