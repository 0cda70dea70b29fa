from django.contrib import admin

from approvals.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only browser over the audit chain."""

    list_display = ("seq", "at", "actor", "action", "object_type", "object_id", "short_hash")
    list_filter = ("action", "object_type", "actor", ("at", admin.DateFieldListFilter))
    search_fields = ("actor", "action", "object_type", "object_id")
    date_hierarchy = "at"
    ordering = ("-seq",)
    list_per_page = 100
    show_full_result_count = False

    @admin.display(description="hash")
    def short_hash(self, obj: AuditEvent) -> str:
        return obj.hash[:12]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
