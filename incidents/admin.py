from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from grace_site import handoff, links
from grace_site.admin import AuditedAdmin
from grace_site.masking import redact_url
from grace_site.templatetags.grace import fact, ms_datetime
from incidents import rule_testing, services
from incidents.choices import IncidentStatus
from incidents.models import DiagnosisRule, Incident, SweepTarget

STATUS_COLOURS = {
    IncidentStatus.OPEN: "#0969da",
    IncidentStatus.HEALING: "#9a6700",
    IncidentStatus.RESOLVED: "#1a7f37",
    IncidentStatus.ESCALATED: "#cf222e",
    IncidentStatus.IGNORED: "#6e7781",
}


def _table(rows) -> str:
    body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
    return format_html('<table class="grace-kv">{}</table>', body) if body else "-"


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "title_short",
        "service",
        "env",
        "status_shown",
        "diagnosis_code",
        "severity",
        "occurrences",
        "last_seen_shown",
        "run",
        "reason",
    ]
    list_display_links = ["id"]
    list_filter = ["status", "source", "severity", "diagnosis_code", "environment", "last_seen"]
    search_fields = ["=id", "title", "service", "fingerprint", "message", "diagnosis_code"]
    date_hierarchy = "last_seen"
    list_per_page = 50
    show_full_result_count = False
    actions = ["test_rule", "resolve_selected", "ignore_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "title",
                    "status_shown",
                    "status_reason",
                    "runs",
                    "service",
                    "environments",
                    "source",
                    "channel",
                    "raised_by",
                    "severity",
                ]
            },
        ),
        ("Diagnosis", {"fields": ["diagnosis_code", "diagnosis_confidence", "evidence"]}),
        ("Occurrences", {"fields": ["fingerprint", "occurrences", "first_seen_ms", "last_seen_ms", "resolved_ms"]}),
        ("Signal", {"fields": ["message", "labels_shown", "raw_payload"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Incidents change only through the intake services (audited), never by editing the row.
        return [field.name for field in Incident._meta.fields] + [
            "status_shown",
            "runs",
            "environments",
            "evidence",
            "labels_shown",
            "first_seen_ms",
            "last_seen_ms",
            "resolved_ms",
        ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # A view page for each incident; the list's actions (resolve, ignore) need the change permission.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Incidents", **(extra_context or {})})

    @admin.display(description="title", ordering="title")
    def title_short(self, obj: Incident) -> str:
        return format_html('<span title="{}">{}</span>', obj.title, Truncator(obj.title).chars(48))

    @admin.display(description="env", ordering="environment")
    def env(self, obj: Incident) -> str:
        return obj.environment or "-"

    @admin.display(description="status", ordering="status")
    def status_shown(self, obj: Incident) -> str:
        return format_html('<b style="color:{}">{}</b>', STATUS_COLOURS.get(obj.status, "inherit"), obj.status)

    @admin.display(description="last seen", ordering="last_seen")
    def last_seen_shown(self, obj: Incident) -> str:
        return timezone.localtime(obj.last_seen).strftime("%m-%d %H:%M:%S")

    @admin.display(description="run")
    def run(self, obj: Incident) -> str:
        if not obj.latest_run_id:
            return "-"
        url = links.ask("run_url", obj.latest_run_id, default="")
        return format_html('<a href="{}">#{}</a>', url, obj.latest_run_id) if url else f"#{obj.latest_run_id}"

    @admin.display(description="why (its last change)")
    def reason(self, obj: Incident) -> str:
        if not obj.status_reason:
            return "-"
        return format_html('<span title="{}">{}</span>', obj.status_reason, Truncator(obj.status_reason).chars(70))

    @admin.display(description="heal runs")
    def runs(self, obj: Incident) -> str:
        rows = links.ask("runs_of_incident", obj.pk, default=[])
        if not rows:
            return "no heal run yet" if obj.status in IncidentStatus.ACTIVE else "none"
        items = format_html_join(
            "",
            '<tr><td><a href="{}">run #{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    r["url"],
                    r["id"],
                    r["status"],
                    timezone.localtime(r["created_at"]).strftime("%Y-%m-%d %H:%M:%S"),
                    Truncator(r["reason"] or "").chars(120),
                )
                for r in rows
            ),
        )
        return format_html('<table class="grace-runs">{}</table>', items)

    @admin.display(description="environment")
    def environments(self, obj: Incident) -> str:
        inventory = obj.environment or "not in the inventory: no environment, GRACE acts on nothing"
        claimed = obj.claimed_environment or "none (a missing environment stays blank, never production)"
        return _table([("inventory's (used)", inventory), ("the signal claimed (evidence only)", claimed)])

    @admin.display(description="first seen")
    def first_seen_ms(self, obj: Incident) -> str:
        return ms_datetime(obj.first_seen)

    @admin.display(description="last seen")
    def last_seen_ms(self, obj: Incident) -> str:
        return ms_datetime(obj.last_seen)

    @admin.display(description="resolved")
    def resolved_ms(self, obj: Incident) -> str:
        return ms_datetime(obj.resolved_at)

    @admin.display(description="diagnosis evidence")
    def evidence(self, obj: Incident) -> str:
        return _table((key, fact(value)) for key, value in sorted((obj.diagnosis_evidence or {}).items()))

    @admin.display(description="labels")
    def labels_shown(self, obj: Incident) -> str:
        return _table((key, fact(value)) for key, value in sorted((obj.labels or {}).items()))

    @admin.action(description="Test a diagnosis rule against the selected incidents", permissions=["view"])
    def test_rule(self, request, queryset):
        rules = DiagnosisRule.objects.order_by("position", "id")
        rule = rules.filter(pk=request.POST.get("rule") or 0).first() if "apply" in request.POST else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Test a diagnosis rule",
            "opts": self.model._meta,
            "incidents": queryset,
            "rules": rules,
            "rule": rule,
            "results": rule_testing.test_rule(rule, list(queryset)) if rule is not None else None,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/incidents/test_rule.html", context)

    @admin.action(
        description="Resolve the selected incidents (cancels heals not yet executing)", permissions=["change"]
    )
    def resolve_selected(self, request, queryset):
        reason = f"resolved by {request.user.get_username()} in the admin"
        done = sum(
            services.resolve(pk, actor=request.user, reason=reason) for pk in queryset.values_list("pk", flat=True)
        )
        self.message_user(request, f"{done} incident(s) resolved.", messages.SUCCESS)

    @admin.action(description="Ignore the selected incidents", permissions=["change"])
    def ignore_selected(self, request, queryset):
        reason = f"ignored by {request.user.get_username()} in the admin"
        done = sum(
            services.set_status(pk, IncidentStatus.IGNORED, actor=request.user, reason=reason)
            for pk in queryset.values_list("pk", flat=True)
        )
        self.message_user(request, f"{done} incident(s) ignored.", messages.SUCCESS)


@admin.register(DiagnosisRule)
class DiagnosisRuleAdmin(AuditedAdmin):
    list_display = ["position", "name", "code", "confidence", "source", "enabled", "updated_at"]
    list_display_links = ["name"]
    list_editable = ["position", "enabled"]
    list_filter = ["enabled", "code", "source"]
    search_fields = ["name", "code", "description", "title_regex", "message_regex"]
    fieldsets = [
        (None, {"fields": ["name", "position", "enabled", "code", "confidence", "description"]}),
        (
            "Conditions (all that are set must hold)",
            {
                "fields": ["source", "label_equals", "label_regex", "title_regex", "message_regex", "thresholds"],
            },
        ),
    ]


@admin.register(SweepTarget)
class SweepTargetAdmin(AuditedAdmin):
    list_display = ["name", "kind", "where", "service", "enabled", "last_checked_at", "last_breaches"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "location", "service"]
    readonly_fields = ["last_checked_at", "last_result"]
    actions = ["sweep_now"]

    @admin.display(description="location")
    def where(self, target: SweepTarget) -> str:
        return redact_url(target.location)  # a password in a PostgreSQL or HTTP URL is not listed

    @admin.display(description="Last breaches")
    def last_breaches(self, target: SweepTarget) -> str:
        return ", ".join(target.last_result.get("breaches", [])) or "-"

    @admin.action(description="Sweep the selected targets now", permissions=["change"])
    def sweep_now(self, request, queryset):
        ids = list(queryset.filter(enabled=True).values_list("pk", flat=True))
        handoff.send_many_on_commit("incidents.sweep_target", ids)
        self.message_user(request, f"{len(ids)} sweep(s) queued.", messages.SUCCESS)


from incidents import admin_deliveries, admin_inventory  # noqa: E402,F401 - register the other incidents admins
