import json

import redis
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from grace_site.admin import ReadOnlyAdmin, ReadOnlyInline
from remediation import fleet, lifecycle, playbooks, resilience
from remediation.choices import RunStatus
from remediation.models import ActionAttempt, Agent, ContractResult, HealRun, Playbook, RunEvent, Snapshot
from remediation.planner import validate_steps


class RunEventInline(ReadOnlyInline):
    model = RunEvent
    fields = readonly_fields = ("at", "from_status", "to_status", "note")
    verbose_name_plural = "timeline"


class AttemptInline(ReadOnlyInline):
    model = ActionAttempt
    fields = readonly_fields = ("step_index", "phase", "attempt", "action", "target", "status", "started_at",
                                "finished_at", "error")  # fmt: skip


class ContractResultInline(ReadOnlyInline):
    model = ContractResult
    fields = readonly_fields = ("step_index", "phase", "field", "operator", "expected", "actual", "passed", "detail")


class SnapshotInline(ReadOnlyInline):
    model = Snapshot
    fields = readonly_fields = ("step_index", "action", "target", "size_bytes", "created_at", "restored_at",
                                "purged_at")  # fmt: skip


STATUS_COLOURS = {
    RunStatus.SUCCEEDED: "#1a7f37", RunStatus.ROLLED_BACK: "#9a6700", RunStatus.FAILED: "#cf222e",
    RunStatus.ESCALATED: "#cf222e", RunStatus.BLOCKED: "#9a6700", RunStatus.AWAITING_APPROVAL: "#0969da",
}  # fmt: skip


@admin.register(HealRun)
class HealRunAdmin(admin.ModelAdmin):
    list_display = ("id", "coloured_status", "incident", "service", "diagnosis_code", "playbook", "tier", "target",
                    "shadow", "dry_run", "created_at", "finished_at")  # fmt: skip
    list_filter = ("status", "tier", "family", "dry_run", "shadow", "diagnosis_code")
    search_fields = ("incident__title", "incident__service", "target", "status_reason")
    date_hierarchy = "created_at"
    list_select_related = ("incident", "playbook")
    inlines = [RunEventInline, AttemptInline, ContractResultInline, SnapshotInline]
    actions = ["retry_stage", "cancel_runs", "roll_back_runs"]
    fieldsets = [
        (None, {"fields": ["incident", "coloured_status", "status_reason", "diagnosis_code", "playbook", "target",
                           "family", "dry_run", "shadow", "started_by"]}),
        ("Governance", {"fields": ["tier", "reasons", "confidence", "policy"]}),
        ("Plan", {"fields": ["plan_steps", "plan_hash", "verification_confidence"]}),
        ("Times", {"fields": ["created_at", "heartbeat_at", "finished_at", "reaper_tries"]}),
    ]  # fmt: skip
    readonly_fields = [f.name for f in HealRun._meta.fields] + ["coloured_status", "reasons", "policy", "plan_steps"]

    @admin.display(description="tier reasons")
    def reasons(self, obj):
        return format_html_join("", "<li>{}</li>", ((r,) for r in obj.tier_reasons)) or "declared tier"

    @admin.display(description="policy explanation")
    def policy(self, obj):
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((e.get("rule"), "yes" if e.get("matched") else "no", e.get("effect"), e.get("why"))
             for e in obj.policy_explanation),
        )  # fmt: skip
        return format_html("<table><tr><th>rule</th><th>matched</th><th>effect</th><th>why</th></tr>{}</table>", rows)

    @admin.display(description="steps")
    def plan_steps(self, obj):
        steps = obj.plan.get("steps", []) if obj.plan else []
        rows = format_html_join(
            "", "<tr><td>{}</td><td><b>{}</b></td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            ((s["index"], s["action"], json.dumps(s["params"]),
              "; ".join(f"{p['field']} {p['op']} {p.get('value')!r}" + (f" within {p['within']} s" if p.get("within")
                                                                          else "") for p in s.get("contract", [])),
              "reversible" if s.get("reversible") else "not reversible") for s in steps),
        )  # fmt: skip
        header = "<tr><th>#</th><th>action</th><th>parameters</th><th>contract</th><th>rollback</th></tr>"
        return format_html("<table>{}{}</table>", mark_safe(header), rows) if steps else "-"  # noqa: S308

    @admin.display(description="status", ordering="status")
    def coloured_status(self, obj):
        return format_html('<b style="color:{}">{}</b>', STATUS_COLOURS.get(obj.status, "inherit"), obj.status)

    @admin.display(description="service", ordering="incident__service")
    def service(self, obj):
        return obj.incident.service

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        view = self.admin_site.admin_view(self.resilience_view)
        return [path("resilience/", view, name="remediation_resilience"), *super().get_urls()]

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
        context = {**self.admin_site.each_context(request), "can_reset": can_reset, "breakers": [], "limits": []}
        try:
            context.update(breakers=resilience.open_breakers(), limits=resilience.spent_limits())
        except redis.RedisError as exc:
            context["error"] = f"breaker and rate-limit state is unavailable: Redis: {exc}"
        return TemplateResponse(request, "admin/remediation/resilience.html", context)

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
        self.message_user(request, f"cancelled {len(done)} run(s); {skipped} were already executing or finished.",
                          messages.SUCCESS if done else messages.WARNING)  # fmt: skip

    @admin.action(description="Roll back the selected finished runs from their snapshots", permissions=["change"])
    def roll_back_runs(self, request, queryset):
        for run in queryset:
            try:
                lifecycle.operator_rollback(run.pk, actor=request.user)
            except lifecycle.RollbackRefused as exc:
                self.message_user(request, f"run #{run.pk}: rollback refused: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"run #{run.pk}: rolling back from verified snapshots", messages.SUCCESS)


class PlaybookForm(admin.ModelAdmin.form):
    def clean_steps(self):
        from django.core.exceptions import ValidationError
        from rest_framework.exceptions import ValidationError as DRFValidationError

        steps = self.cleaned_data["steps"]
        try:
            validate_steps(steps)
        except DRFValidationError as exc:
            raise ValidationError(str(exc.detail.get("steps", exc.detail))) from None
        return steps


@admin.register(Playbook)
class PlaybookAdmin(admin.ModelAdmin):
    form = PlaybookForm
    list_display = ("name", "diagnosis_codes", "tier", "enabled", "shadow", "escalate_only", "paused_reason")
    list_filter = ("enabled", "shadow", "tier", "escalate_only")
    search_fields = ("name", "description")
    readonly_fields = ("paused_reason", "created_at", "updated_at")

    def save_model(self, request, obj, form, change):
        before = playbooks.snapshot(Playbook.objects.filter(pk=obj.pk).first()) if change else None
        replanned = playbooks.save(obj, actor=request.user, before=before)
        if replanned:
            self.message_user(request, f"{replanned} run(s) waiting for approval got the new plan; "
                              "their earlier approvals are void.", messages.WARNING)  # fmt: skip

    def delete_model(self, request, obj):
        try:
            playbooks.delete(obj, actor=request.user)
        except playbooks.PlaybookInUse as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def delete_queryset(self, request, queryset):
        for playbook in queryset:
            self.delete_model(request, playbook)


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    """The safe-point history: what each run captured, and its sha256 manifest."""

    list_display = (
        "id",
        "run",
        "step_index",
        "action",
        "target",
        "size_bytes",
        "created_at",
        "restored_at",
        "purged_at",
    )
    list_filter = ("action",)
    search_fields = ("target", "action")
    readonly_fields = [f.name for f in Snapshot._meta.fields]


@admin.register(Agent)
class AgentAdmin(ReadOnlyAdmin):
    """The agents of the fleet: which host each acts on, what it consumes, and when it was last heard from."""

    list_display = ("host", "name", "live", "last_seen", "version", "queue_list", "var_dir", "started_at")
    list_filter = ("host",)
    search_fields = ("host", "name")

    @admin.display(description="live", boolean=True)
    def live(self, obj: Agent) -> bool:
        return fleet.live_agents().filter(pk=obj.pk).exists()

    @admin.display(description="queues")
    def queue_list(self, obj: Agent) -> str:
        return ", ".join(obj.queues)
