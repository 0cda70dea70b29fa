import io
import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from approvals import admin_approvals, admin_policy, admin_tokens  # noqa: F401 - registers the governance admins
from approvals.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only browser over the audit chain, with a "verify chain" button."""

    list_display = ("seq", "at", "actor", "action", "object_type", "object_id", "short_hash")
    list_filter = ("action", "object_type", "actor", ("at", admin.DateFieldListFilter))
    search_fields = ("actor", "action", "object_type", "=object_id")
    date_hierarchy = "at"
    ordering = ("-seq",)
    list_per_page = 100
    show_full_result_count = False
    change_list_template = "admin/approvals/auditevent/change_list.html"
    fields = ("seq", "at", "actor", "action", "object_type", "object_id", "data_shown", "prev_hash", "hash")
    readonly_fields = fields

    @admin.display(description="data (credentials masked)")
    def data_shown(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.masked_data(), indent=2, sort_keys=True, ensure_ascii=False))

    @admin.display(description="hash")
    def short_hash(self, obj: AuditEvent) -> str:
        return obj.hash[:12]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

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
