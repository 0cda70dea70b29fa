from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse

from grace_site import handoff
from grace_site.admin import AuditedAdmin
from grace_site.masking import redact_url
from incidents import rule_testing, services
from incidents.choices import IncidentStatus
from incidents.models import DiagnosisRule, Incident, SweepTarget


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "service", "status", "diagnosis_code", "severity", "occurrences", "last_seen"]
    list_filter = ["status", "source", "severity", "diagnosis_code", "environment", "last_seen"]
    search_fields = ["title", "service", "fingerprint", "message", "diagnosis_code"]
    date_hierarchy = "last_seen"
    actions = ["test_rule", "resolve_selected", "ignore_selected"]
    fieldsets = [
        (None, {"fields": ["title", "service", "environment", "source", "severity", "status", "status_reason"]}),
        ("Occurrences", {"fields": ["fingerprint", "occurrences", "first_seen", "last_seen", "resolved_at"]}),
        ("Diagnosis", {"fields": ["diagnosis_code", "diagnosis_confidence", "diagnosis_evidence"]}),
        ("Signal", {"fields": ["message", "labels", "raw_payload"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Incidents change only through the intake services (audited), never by editing the row.
        return [field.name for field in Incident._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

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
        ("Conditions (all that are set must hold)", {
            "fields": ["source", "label_equals", "label_regex", "title_regex", "message_regex", "thresholds"],
        }),
    ]  # fmt: skip


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
