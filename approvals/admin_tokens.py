"""Users' API tokens in the admin: issued here (the key shown once), listed by their first characters, revoked."""

from __future__ import annotations

from django.contrib import admin, messages
from django.urls import reverse

from approvals import tokens
from approvals.models import ApiToken
from grace_site.admin import show_once


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "hint", "created_at", "last_used_at"]
    list_filter = ["user"]
    search_fields = ["name", "user__username", "hint"]
    fields = ["user", "name", "hint", "created_at", "last_used_at"]
    readonly_fields = ["hint", "created_at", "last_used_at"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "user", "name"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return  # nothing of a token is editable
        try:
            made, key = tokens.issue(obj.user, name=obj.name, actor=request.user)
        except ValueError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        obj.pk, request._grace_new_key = made.pk, key

    def response_add(self, request, obj, post_url_continue=None):
        key = getattr(request, "_grace_new_key", None)
        if key is None:
            return super().response_add(request, obj, post_url_continue)
        return show_once(
            request,
            self,
            title=f"API token {obj.name} of {obj.user.get_username()}",
            what=f"This is API token {obj.name!r} of {obj.user.get_username()}.",
            secret=key,
            usage="Authorization: Token <the key above>",
            back_url=reverse("admin:approvals_apitoken_changelist"),
        )

    def delete_model(self, request, obj):
        tokens.revoke(obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for token in queryset.select_related("user"):
            tokens.revoke(token, actor=request.user)
