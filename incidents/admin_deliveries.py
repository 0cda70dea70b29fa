"""Admin for stored intake deliveries: read-only, with a "replay" action for parked ones (through
``incidents.intake.replay``, audited)."""

from __future__ import annotations

from django.contrib import admin, messages

from grace_site.admin import ReadOnlyAdmin
from incidents import intake
from incidents.choices import DeliveryStatus
from incidents.models import Delivery


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "channel", "status", "alerts", "attempts", "received_at", "processed_at", "problem"]
    list_filter = ["status", "kind", "channel", "received_at"]
    search_fields = ["=id", "error", "channel__name"]
    date_hierarchy = "received_at"
    list_select_related = ["channel"]
    actions = ["replay_selected"]
    fields = [
        "id",
        "kind",
        "channel",
        "raised_by",
        "status",
        "alerts",
        "received_at",
        "processed_at",
        "attempts",
        "available_at",
        "lease_until",
        "error",
        "result",
        "body",
    ]

    @admin.display(description="error")
    def problem(self, delivery: Delivery) -> str:
        return (delivery.error[:120] + "…") if len(delivery.error) > 120 else delivery.error or "-"

    def has_replay_permission(self, request) -> bool:
        return request.user.has_perm("incidents.change_delivery")

    @admin.action(description="Replay the selected parked deliveries", permissions=["replay"])
    def replay_selected(self, request, queryset):
        ids = list(queryset.filter(status=DeliveryStatus.PARKED).values_list("pk", flat=True))
        done = sum(intake.replay(pk, actor=request.user) for pk in ids)
        skipped = queryset.count() - done
        self.message_user(request, f"{done} delivery(ies) sent back to the consumers.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} not parked: left as they are.", messages.WARNING)
