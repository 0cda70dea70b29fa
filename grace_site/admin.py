"""Admin bases every GRACE app uses: read-only records, and audited configuration.

``AuditedAdmin`` writes one audit event per add, change and delete made in the admin (bulk deletes and
admin actions included), in the same transaction, with the values before and after (credentials masked):
``config.created``, ``config.changed``, ``config.deleted``, the object named by its model and id. The audit
log itself lives in an app (``settings.GRACE_AUDIT_RECORDER`` names its writer), since grace_site imports none.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.contrib import admin
from django.db import models, transaction
from django.template.response import TemplateResponse
from django.utils.module_loading import import_string

from grace_site.changes import diff, values


def show_once(request, model_admin, *, title: str, what: str, secret: str, usage: str, back_url: str):
    """The page that shows a newly issued token once (it is never stored, nor put in a message)."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "opts": model_admin.model._meta,
        "what": what,
        "secret": secret,
        "usage": usage,
        "back_url": back_url,
    }
    return TemplateResponse(request, "admin/grace/secret_once.html", context)


def record(action: str, *, actor, obj, data: dict) -> None:
    import_string(settings.GRACE_AUDIT_RECORDER)(action, actor=actor, obj=obj, data=data)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records nobody edits here (outcomes, snapshots, deliveries...): view pages, no add, change or delete."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """A read-only list of related rows on another record's page (a run's timeline...)."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AuditedAdmin(admin.ModelAdmin):
    """Configuration edited in the admin: every add, change and delete audited with before and after values.

    Admin actions are audited too: each selected object that an action changed gets a ``config.changed`` event
    naming the action. ``audit_masked``: fields holding credentials, masked in the audit data (secret-named
    fields always are); ``audit_masked_urls``: URL fields holding credentials, shown as scheme and host.
    """

    audit_masked: tuple[str, ...] = ()
    audit_masked_urls: tuple[str, ...] = ()

    def audit_values(self, obj: models.Model) -> dict:
        return values(obj, masked=self.audit_masked, masked_urls=self.audit_masked_urls)

    def audit_object(self, obj: models.Model):
        """How the audit log names the object (override when the primary key is itself a secret)."""
        return obj

    def _record(self, action: str, request, obj, data: dict) -> None:
        record(action, actor=request.user, obj=self.audit_object(obj), data=data)

    def save_model(self, request, obj, form, change):
        stored = type(obj)._default_manager.filter(pk=obj.pk).first() if change else None
        request._grace_audit_before = self.audit_values(stored) if stored is not None else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)  # many-to-many values are in place now
        changes = diff(getattr(request, "_grace_audit_before", None), self.audit_values(form.instance))
        if changes or not change:
            self._record("config.changed" if change else "config.created", request, form.instance, {"changes": changes})

    def delete_model(self, request, obj):
        with transaction.atomic():
            self._record("config.deleted", request, obj, {"changes": diff(self.audit_values(obj), None)})
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self._record("config.deleted", request, obj, {"changes": diff(self.audit_values(obj), None)})
            super().delete_queryset(request, queryset)

    def get_actions(self, request):
        actions = super().get_actions(request)
        for name, (func, action_name, description) in list(actions.items()):
            if name != "delete_selected":  # deletes are audited by delete_queryset
                actions[name] = (self._audited(func, name), action_name, description)
        return actions

    def _audited(self, func, name: str):
        def run(modeladmin, request, queryset):
            pks = list(queryset.values_list("pk", flat=True))
            manager = self.model._default_manager
            with transaction.atomic():
                before = {obj.pk: self.audit_values(obj) for obj in manager.filter(pk__in=pks)}
                response = func(modeladmin, request, queryset)
                for obj in manager.filter(pk__in=pks):
                    changes = diff(before.get(obj.pk), self.audit_values(obj))
                    if changes:
                        self._record("config.changed", request, obj, {"changes": changes, "admin_action": name})
            return response

        functools.update_wrapper(run, func)
        return run


# --- Django's and the libraries' own models, audited the same way -------------------------------------


def _reregister(model: type[models.Model], admin_class: type[admin.ModelAdmin], *mixins, **attrs) -> None:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    bases = (*mixins, AuditedAdmin, admin_class)
    admin.site.register(model, type(f"Audited{admin_class.__name__}", bases, attrs))


def audit_third_party_admins() -> None:
    """Users, groups and beat schedules: changes made in the admin are audited like GRACE's."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.admin import GroupAdmin, UserAdmin
    from django.contrib.auth.models import Group
    from django_celery_beat import admin as beat_admin
    from django_celery_beat import models as beat

    _reregister(get_user_model(), UserAdmin, audit_masked=("password",))
    _reregister(Group, GroupAdmin)
    _reregister(beat.PeriodicTask, beat_admin.PeriodicTaskAdmin)
    for model, admin_class in (
        (beat.IntervalSchedule, beat_admin.IntervalScheduleAdmin),
        (beat.CrontabSchedule, beat_admin.CrontabScheduleAdmin),
        (beat.SolarSchedule, beat_admin.SolarScheduleAdmin),
        (beat.ClockedSchedule, beat_admin.ClockedScheduleAdmin),
    ):
        _reregister(model, admin_class)


audit_third_party_admins()
