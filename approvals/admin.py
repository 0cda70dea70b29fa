import io
import json

from django.contrib import admin, messages
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from approvals import (  # noqa: F401 - admin_approvals, admin_policy and admin_tokens register their admins
    admin_approvals,
    admin_policy,
    admin_tokens,
    audit,
    checkpoints,
)
from approvals.models import AuditCheckpoint, AuditEvent
from grace_site.admin import ReadOnlyAdmin


class SealedFilter(admin.SimpleListFilter):
    title = "sealed"
    parameter_name = "sealed"

    def lookups(self, request, model_admin):
        return [("yes", "sealed into the chain"), ("no", "waiting for the sealer")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(seal__isnull=self.value() == "no")
        return queryset


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only browser over the audit log, with a "verify chain" button. An entry is listed as soon as
    its transaction commits; its seq and hash appear once the sealer has chained it (within seconds)."""

    list_display = ("id", "seq", "at", "actor", "action", "object_type", "object_id", "short_hash")
    list_filter = ("action", "object_type", "actor", SealedFilter, ("at", admin.DateFieldListFilter))
    list_select_related = ("seal",)
    search_fields = ("actor", "action", "object_type", "=object_id")
    date_hierarchy = "at"
    ordering = ("-id",)
    list_per_page = 100
    show_full_result_count = False
    change_list_template = "admin/approvals/auditevent/change_list.html"
    fields = ("id", "at", "actor", "action", "object_type", "object_id", "data_shown", "seq", "prev_hash", "chain_hash")
    readonly_fields = fields

    @admin.display(description="data (credentials masked)")
    def data_shown(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.masked_data(), indent=2, sort_keys=True, ensure_ascii=False))

    @admin.display(description="seq", ordering="seal__seq")
    def seq(self, obj: AuditEvent):
        seal = getattr(obj, "seal", None)
        return seal.seq if seal else None

    @admin.display(description="previous hash")
    def prev_hash(self, obj: AuditEvent) -> str:
        seal = getattr(obj, "seal", None)
        return seal.prev_hash if seal else "(not sealed yet)"

    @admin.display(description="hash")
    def chain_hash(self, obj: AuditEvent) -> str:
        seal = getattr(obj, "seal", None)
        return seal.hash if seal else "(not sealed yet)"

    @admin.display(description="hash")
    def short_hash(self, obj: AuditEvent) -> str:
        seal = getattr(obj, "seal", None)
        return seal.hash[:12] if seal else "—"

    def get_urls(self):
        verify = self.admin_site.admin_view(self.verify_chain_view)
        return [path("verify/", verify, name="approvals_auditevent_verify"), *super().get_urls()]

    def verify_chain_view(self, request):
        """Run ``manage.py verify_audit`` and show its result (POST only: it reads the whole chain)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            out = io.StringIO()
            try:
                call_command("verify_audit", stdout=out)
            except CommandError as exc:
                self.message_user(request, f"verify_audit: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"verify_audit: {out.getvalue().strip()}", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:approvals_auditevent_changelist"))


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    """Signed checkpoints of the chain's head. The page opens with the latest one: its age, and whether it
    verifies (signed by GRACE's key, and the chain still has that head at that seq)."""

    list_display = ("issued_at", "size", "short_head", "key_id", "sinks_written", "requested_by")
    ordering = ("-issued_at", "-id")
    list_per_page = 50
    show_full_result_count = False
    change_list_template = "admin/approvals/auditcheckpoint/change_list.html"

    @admin.display(description="head")
    def short_head(self, obj: AuditCheckpoint) -> str:
        return obj.head[:12]

    @admin.display(description="sinks")
    def sinks_written(self, obj: AuditCheckpoint) -> str:
        return ", ".join(f"{url}: {result}" for url, result in sorted(obj.sinks.items()))

    def changelist_view(self, request, extra_context=None):
        context = {
            "audit_status": checkpoints.status(),
            "can_issue": request.user.has_perm("approvals.issue_auditcheckpoint"),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def get_urls(self):
        issue = self.admin_site.admin_view(self.issue_view)
        return [path("issue/", issue, name="approvals_auditcheckpoint_issue"), *super().get_urls()]

    def issue_view(self, request):
        """Seal now and sign a checkpoint into every sink (POST; what beat does on its schedule)."""
        if not request.user.has_perm("approvals.issue_auditcheckpoint"):
            raise PermissionDenied
        if request.method == "POST":
            with transaction.atomic():
                audit.record("audit.checkpoint_requested", actor=request.user)
            sealed = audit.seal(wait=True)
            try:
                checkpoint = checkpoints.issue(requested_by=request.user.get_username())
            except ImproperlyConfigured as exc:
                self.message_user(request, f"no checkpoint: {exc}", messages.ERROR)
            else:
                failed = {url: result for url, result in checkpoint.sinks.items() if result != "ok"}
                level = messages.WARNING if failed else messages.SUCCESS
                self.message_user(
                    request,
                    f"sealed {sealed.sealed} entries; checkpoint of {checkpoint.size} events signed"
                    + (f", but not written to {failed}" if failed else f" into {len(checkpoint.sinks)} sink(s)"),
                    level,
                )
        return HttpResponseRedirect(reverse("admin:approvals_auditcheckpoint_changelist"))
