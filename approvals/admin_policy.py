"""Admin for policy rules, the shadow-mode switch and notification channels.

Every change made here is written to the audit log in the same transaction.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import reverse

from approvals import audit
from approvals.choices import WEEKDAYS, Effect, NotificationEvent
from approvals.models import GovernanceSettings, Notification, NotificationChannel, PolicyRule
from approvals.notifications import notify
from grace_site.admin import AuditedAdmin, ReadOnlyAdmin
from grace_site.masking import mask_url, scrub

LIST_FIELDS = ("match_actions", "match_families", "match_environments", "match_services", "match_diagnoses")


class CommaListField(forms.CharField):
    """A list of strings typed as "a, b, c"; empty means "any"."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [item.strip() for item in text.split(",") if item.strip()]


class PolicyRuleForm(forms.ModelForm):
    match_actions = CommaListField(required=False, help_text="e.g. sqlite.*, process.restart — empty = any action")
    match_families = CommaListField(required=False, help_text="local, aws, docker, kubernetes — empty = any")
    match_environments = CommaListField(required=False, help_text="e.g. production, prod — empty = any")
    match_services = CommaListField(required=False, help_text="e.g. orders-*, payments-db — empty = any")
    match_diagnoses = CommaListField(required=False, help_text="diagnosis codes — empty = any")
    window_weekdays = forms.TypedMultipleChoiceField(
        choices=list(enumerate(WEEKDAYS)),
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Days the window applies (none ticked = every day).",
    )

    class Meta:
        model = PolicyRule
        fields = [
            "name",
            "description",
            "enabled",
            "priority",
            "effect",
            "tier",
            "max_per_hour",
            *LIST_FIELDS,
            "window_weekdays",
            "window_start",
            "window_end",
            "window_timezone",
        ]


@admin.register(PolicyRule)
class PolicyRuleAdmin(AuditedAdmin):
    """Rules in precedence order: lower priority first; the first allow/deny decides; tiers and limits add up."""

    form = PolicyRuleForm
    list_display = ("name", "enabled", "priority", "effect", "strength", "matches", "window")
    list_filter = ("enabled", "effect")
    search_fields = ("name", "description")
    ordering = ("priority", "name")
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled", "priority", "effect", "tier", "max_per_hour")}),
        ("Match (every non-empty list must be hit)", {"fields": LIST_FIELDS}),
        (
            "Time window (a deny rule with a window is a blackout)",
            {"fields": ("window_weekdays", "window_start", "window_end", "window_timezone")},
        ),
    )

    @admin.display(description="tier / budget")
    def strength(self, obj: PolicyRule) -> str:
        if obj.effect == Effect.REQUIRE_TIER:
            return f"tier {obj.tier}"
        if obj.effect == Effect.LIMIT:
            return f"{obj.max_per_hour}/hour per target"
        return ""

    @admin.display(description="matches")
    def matches(self, obj: PolicyRule) -> str:
        parts = [f"{name[6:]}: {', '.join(getattr(obj, name))}" for name in LIST_FIELDS if getattr(obj, name)]
        return "; ".join(parts) or "every plan"

    @admin.display(description="window")
    def window(self, obj: PolicyRule) -> str:
        if not obj.window_weekdays and obj.window_start is None:
            return "always"
        days = ",".join(WEEKDAYS[d] for d in sorted(obj.window_weekdays)) or "daily"
        if obj.window_start is None:
            return f"{days} {obj.window_timezone}"
        return f"{days} {obj.window_start:%H:%M}-{obj.window_end:%H:%M} {obj.window_timezone}"


@admin.register(GovernanceSettings)
class GovernanceSettingsAdmin(AuditedAdmin):
    """The singleton switch board (shadow mode)."""

    list_display = ("__str__", "shadow_mode", "updated_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        GovernanceSettings.objects.get_or_create(pk=1)
        return HttpResponseRedirect(reverse("admin:approvals_governancesettings_change", args=[1]))


class NotificationChannelForm(forms.ModelForm):
    """The webhook URL is write-only: never rendered back into the page; left empty, it is kept."""

    url = forms.URLField(
        max_length=500,
        required=False,
        assume_scheme="https",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "size": 80}),
        help_text="Webhook: the URL receiving Slack-compatible JSON. It is a credential: never shown again; "
        "leave empty to keep the current one.",
    )

    class Meta:
        model = NotificationChannel
        fields = ["name", "kind", "url", "recipients", "events", "enabled"]

    def clean_url(self) -> str:
        return self.cleaned_data.get("url") or (self.instance.url if self.instance.pk else "")


@admin.register(NotificationChannel)
class NotificationChannelAdmin(AuditedAdmin):
    audit_masked_urls = ("url",)  # a Slack webhook URL is a credential
    form = NotificationChannelForm
    list_display = ("name", "kind", "enabled", "destination", "event_list")
    list_filter = ("kind", "enabled")
    actions = ["send_test"]

    def _view_only(self, request, obj) -> bool:
        return obj is not None and not self.has_change_permission(request, obj)

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        # A read-only page would print the stored URL: it shows "destination", masked, instead.
        return [name for name in fields if name != "url"] if self._view_only(request, obj) else fields

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        return [*readonly, "destination"] if self._view_only(request, obj) else readonly

    @admin.display(description="destination")
    def destination(self, obj: NotificationChannel) -> str:
        return mask_url(obj.url) if obj.kind == "webhook" else ", ".join(obj.recipients)

    @admin.display(description="events")
    def event_list(self, obj: NotificationChannel) -> str:
        return ", ".join(obj.events) or "all"

    @admin.action(description="Send a test notification")
    def send_test(self, request, queryset):
        names = ", ".join(channel.name for channel in queryset)
        with transaction.atomic():
            audit.record("notification.test", actor=request.user, data={"channels": names})
            notify(
                NotificationEvent.TEST,
                run_id=None,
                summary=f"test from {request.user.get_username()}",
                context={},
                channel_ids=[channel.pk for channel in queryset],
            )
        self.message_user(request, f"Test notification queued for {names}.", messages.INFO)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """Delivery log (read-only)."""

    list_display = ("created_at", "event", "channel", "run", "status", "attempts", "error")
    list_filter = ("status", "event", "channel")
    search_fields = ("summary", "=run__id")
    exclude = ("last_error",)
    readonly_fields = ("error",)

    @admin.display(description="last error")
    def error(self, obj: Notification) -> str:
        return scrub(obj.last_error, [obj.channel.url])

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("channel")
