"""Admin for the service inventory and the intake channels.

Every change goes through ``incidents.inventory`` and ``incidents.channels`` (validated, audited with before
and after). A channel's token is shown once, on the page that issues it, and stored only as a digest.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.urls import reverse

from grace_site.admin import show_once
from incidents import channels, inventory
from incidents.models import Channel, Resource, Service


class ResourceForm(forms.ModelForm):
    """Narrow widgets, so a service's resources fit a 1,400 px window."""

    class Meta:
        model = Resource
        fields = ["name", "kind", "target", "scope", "host", "description"]
        widgets = {
            "name": forms.TextInput(attrs={"size": 14}),
            "kind": forms.Select(attrs={"style": "max-width: 13em"}),
            "target": forms.TextInput(attrs={"size": 36}),
            "scope": forms.Textarea(attrs={"rows": 1, "cols": 26}),
            "host": forms.TextInput(attrs={"size": 12}),
            "description": forms.Textarea(attrs={"rows": 1, "cols": 26}),
        }


class ResourceInline(admin.TabularInline):
    model = Resource
    form = ResourceForm
    extra = 0
    fields = ["name", "kind", "target", "scope", "host", "description"]


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    """Services GRACE may act for, with the resources it may act on."""

    list_display = ["name", "environment", "tier_floor", "owner", "host_list", "resource_count"]
    list_filter = ["environment", "tier_floor"]
    search_fields = ["name", "owner", "resources__name", "resources__target"]
    inlines = [ResourceInline]

    @admin.display(description="hosts")
    def host_list(self, service: Service) -> str:
        return ", ".join(service.hosts) or "-"

    @admin.display(description="resources")
    def resource_count(self, service: Service) -> int:
        return service.resources.count()

    def save_model(self, request, obj, form, change):
        inventory.save_service(obj, actor=request.user)

    def save_formset(self, request, form, formset, change):
        with transaction.atomic():
            resources = formset.save(commit=False)
            for resource in formset.deleted_objects:
                inventory.delete_resource(resource, actor=request.user)
            for resource in resources:
                resource.service = form.instance
                inventory.save_resource(resource, actor=request.user)

    def delete_model(self, request, obj):
        inventory.delete_service(obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for service in queryset:
                inventory.delete_service(service, actor=request.user)


@admin.register(Resource)
class ResourceAdmin(admin.ModelAdmin):
    """Every resource of every service: what GRACE may touch, and nothing else."""

    list_display = ["name", "service", "kind", "target", "host"]
    list_filter = ["kind", "service__environment"]
    search_fields = ["name", "target", "service__name"]
    list_select_related = ["service"]

    def save_model(self, request, obj, form, change):
        inventory.save_resource(obj, actor=request.user)

    def delete_model(self, request, obj):
        inventory.delete_resource(obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for resource in queryset.select_related("service"):
                inventory.delete_resource(resource, actor=request.user)


class ChannelForm(forms.ModelForm):
    class Meta:
        model = Channel
        fields = ["name", "kind", "source", "owner", "all_services", "services", "enabled"]

    def clean(self):
        cleaned = super().clean()
        probe = Channel(
            name=cleaned.get("name") or self.instance.name,
            kind=cleaned.get("kind") or self.instance.kind,
            source=cleaned.get("source") or self.instance.source,
            builtin=self.instance.builtin,
        )
        channels.validate(probe)
        return cleaned


def _usage(request, channel: Channel) -> str:
    if channel.kind == "alertmanager":
        url = request.build_absolute_uri("/api/webhooks/alertmanager/")
        return (
            "Alertmanager receiver:\n"
            f'webhook_configs:\n  - url: "{url}"\n    http_config:\n      authorization:\n'
            '        type: Bearer\n        credentials: "<the token above>"'
        )
    return "API client: Authorization: Bearer <the token above>, on POST /api/incidents/"


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    """Integrations allowed to raise incidents. A new channel's token is shown once, right after it is made."""

    list_display = ["name", "kind", "source", "owner", "scope", "enabled", "token_hint", "builtin"]
    list_filter = ["kind", "source", "enabled", "builtin"]
    search_fields = ["name"]
    filter_horizontal = ["services"]
    readonly_fields = ["token_hint", "builtin", "created_at", "updated_at"]
    actions = ["issue_new_token"]
    fields = ["name", "kind", "source", "owner", "all_services", "services", "enabled", *readonly_fields]

    @admin.display(description="may raise for")
    def scope(self, channel: Channel) -> str:
        if channel.all_services:
            return "every service"
        return ", ".join(channel.services.values_list("name", flat=True)) or "no service"

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.builtin:
            return [*self.readonly_fields, "name", "kind", "source"]
        return self.readonly_fields

    form = ChannelForm

    def save_model(self, request, obj, form, change):
        pass  # saved with its services in save_related, through the service layer (audited)

    def save_related(self, request, form, formsets, change):
        channels.save(form.instance, services=form.cleaned_data.get("services"), actor=request.user)

    def response_add(self, request, obj, post_url_continue=None):
        if obj.kind == "internal":
            return super().response_add(request, obj, post_url_continue)
        return self._show_token(request, obj, channels.issue_token(obj, actor=request.user))

    def _show_token(self, request, channel: Channel, token: str):
        return show_once(
            request,
            self,
            title=f"Token of channel {channel.name}",
            what=f"This is the token of channel {channel.name} ({channel.get_kind_display()}).",
            secret=token,
            usage=_usage(request, channel),
            back_url=reverse("admin:incidents_channel_change", args=[channel.pk]),
        )

    def delete_model(self, request, obj):
        try:
            channels.delete(obj, actor=request.user)
        except channels.ChannelKept as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def delete_queryset(self, request, queryset):
        for channel in queryset:
            self.delete_model(request, channel)

    @admin.action(description="Issue a new token (the old one stops working)", permissions=["change"])
    def issue_new_token(self, request, queryset):
        issuable = [channel for channel in queryset if channel.kind != "internal"]
        if len(issuable) != 1:
            self.message_user(request, "Select exactly one Alertmanager or API channel.", messages.ERROR)
            return None
        return self._show_token(request, issuable[0], channels.issue_token(issuable[0], actor=request.user))
