"""Every model an admin may edit: a change and a delete made through its admin pages leave an audit event by
the operator, the change with its new value.

``EDITS`` names, per editable admin model, how to make one and which field to change; a model that becomes
editable in the admin fails ``test_every_editable_admin_is_walked`` until it is added here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django import forms
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule

from approvals.models import AuditEvent, NotificationChannel, PolicyRule
from incidents.models import DiagnosisRule, SweepTarget
from learning.models import BenchmarkSuite
from remediation.models import Playbook
from tests.remediation.conftest import allowed_root  # noqa: F401 - fixture
from tests.support import inventory

pytestmark = pytest.mark.django_db


@dataclass
class Edit:
    make: Callable  # (allowed_root) -> the object
    field: str
    value: object  # what the field is changed to, as a form would send it
    deletable: bool = True


EDITS: dict[str, Edit] = {
    "approvals.NotificationChannel": Edit(
        lambda root: NotificationChannel.objects.create(name="walk-mail", kind="email", recipients=["ops@example.com"]),
        "name",
        "walk-mail-2",
    ),
    "approvals.PolicyRule": Edit(
        lambda root: PolicyRule.objects.create(name="walk-rule", effect="deny", match_services=["orders"]),
        "description",
        "no heals on orders",
    ),
    "approvals.GovernanceSettings": Edit(lambda root: _governance(), "shadow_mode", True, deletable=False),
    "auth.Group": Edit(lambda root: Group.objects.create(name="walkers"), "name", "walkers-2"),
    "auth.User": Edit(
        lambda root: User.objects.create_user("walk-user", password="pw-walk-123456"), "first_name", "Wanda"
    ),  # noqa: E501
    "django_celery_beat.ClockedSchedule": Edit(
        lambda root: ClockedSchedule.objects.create(clocked_time=timezone.now()),
        "clocked_time",
        "2031-01-02 03:04:05",
    ),
    "django_celery_beat.CrontabSchedule": Edit(lambda root: CrontabSchedule.objects.create(minute="5"), "minute", "17"),  # noqa: E501
    "django_celery_beat.IntervalSchedule": Edit(
        lambda root: IntervalSchedule.objects.create(every=77, period="seconds"), "every", 78
    ),
    "django_celery_beat.PeriodicTask": Edit(
        lambda root: PeriodicTask.objects.create(
            name="walk-task", task="grace.ping", interval=IntervalSchedule.objects.create(every=5, period="seconds")
        ),
        "description",
        "walked by the admin test",
    ),
    "django_celery_beat.SolarSchedule": Edit(
        lambda root: SolarSchedule.objects.create(event="sunrise", latitude=10, longitude=10), "latitude", "11.5"
    ),
    "incidents.DiagnosisRule": Edit(
        lambda root: DiagnosisRule.objects.create(name="walk-rule", code="walk_code", title_regex="walk"),
        "title_regex",
        "walked",
    ),
    "incidents.SweepTarget": Edit(
        lambda root: SweepTarget.objects.create(name="walk-sweep", kind="http", location="http://127.0.0.1:8000/"),
        "service",
        "walked-service",
    ),
    "incidents.Service": Edit(lambda root: inventory.service("walk-shop"), "description", "the walked shop"),
    "incidents.Resource": Edit(
        lambda root: inventory.resource("walk-shop", "cache", root, name="cache"), "name", "walked-cache"
    ),
    "incidents.Channel": Edit(lambda root: inventory.channel("walk-channel")[0], "name", "walked-channel"),
    "learning.BenchmarkSuite": Edit(
        lambda root: BenchmarkSuite.objects.create(name="walk-suite", checks=[{"kind": "database", "params": {}}]),
        "description",
        "walked suite",
    ),
    "remediation.Playbook": Edit(
        lambda root: Playbook.objects.create(name="walk-play", diagnosis_codes=["walk_code"], steps=[], tier=2),
        "description",
        "walked playbook",
    ),
}


# Editable pages whose every field is read-only: what they change goes through admin actions backed by audited
# services, walked in tests/test_admin_audit.py and the governance tests.
THROUGH_ACTIONS = {
    "incidents.Incident": "resolve / ignore (incidents.services)",
    "remediation.HealRun": "retry, cancel, roll back (remediation.lifecycle)",
    "approvals.ApiToken": "issue / revoke (approvals.tokens)",
}


def _one(label: str, user):
    from approvals import tokens
    from incidents.models import Incident
    from remediation.models import HealRun

    now = timezone.now()
    if label == "approvals.ApiToken":
        return tokens.issue(user, name="walk")[0]
    incident = Incident.objects.create(fingerprint="walk", title="t", first_seen=now, last_seen=now)
    return incident if label == "incidents.Incident" else HealRun.objects.create(incident=incident, status="PLANNED")


def _governance():
    from approvals.models import GovernanceSettings

    return GovernanceSettings.objects.get_or_create(pk=1)[0]


def _editable(admin_user) -> set[str]:
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    return {
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if model_admin.has_change_permission(request)
    }


def test_every_editable_admin_is_walked(admin_user):
    assert _editable(admin_user) == set(EDITS) | set(THROUGH_ACTIONS)


@pytest.mark.parametrize("label", sorted(THROUGH_ACTIONS))
def test_pages_edited_only_through_actions_have_no_editable_field(label, admin_user):
    model = next(m for m in admin.site._registry if m._meta.label == label)
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    model_admin = admin.site._registry[model]
    form = model_admin.get_form(request, _one(label, admin_user), change=True)

    assert not [name for name, field in form.base_fields.items() if not field.disabled], label


def _field_data(data: dict, bound) -> None:
    widget, value = bound.field.widget, bound.value()
    if bound.field.disabled:
        return
    if isinstance(widget, forms.CheckboxInput):
        if value:
            data[bound.html_name] = "on"
    elif isinstance(widget, forms.MultiWidget):
        parts = value if isinstance(value, list) else widget.decompress(value)
        for i, (sub, part) in enumerate(zip(widget.widgets, parts, strict=False)):
            data[f"{bound.html_name}{widget.widgets_names[i]}"] = sub.format_value(part) or ""
    elif isinstance(value, list | tuple):
        data[bound.html_name] = [str(v) for v in value]
    elif value is not None:
        data[bound.html_name] = value


def form_data(response) -> dict:
    """What the change page would post back unchanged: its form, and its inlines' forms and management forms."""
    data: dict = {}
    for bound in response.context["adminform"].form:
        _field_data(data, bound)
    for inline in response.context["inline_admin_formsets"]:
        for bound in inline.formset.management_form:
            data[bound.html_name] = bound.value()
        for form in inline.formset.forms:
            for bound in form:
                _field_data(data, bound)
    return data


def _set(data: dict, response, name: str, value) -> None:
    bound = response.context["adminform"].form[name]
    if isinstance(bound.field.widget, forms.CheckboxInput):
        data.pop(name, None)
        if value:
            data[name] = "on"
    elif isinstance(bound.field.widget, forms.SplitDateTimeWidget):
        data[f"{name}_0"], data[f"{name}_1"] = str(value).split(" ")
    else:
        data[name] = value


def _events_since(before: int):
    return AuditEvent.objects.filter(id__gt=before)


@pytest.mark.parametrize("label", sorted(EDITS))
def test_a_change_and_a_delete_in_the_admin_leave_audit_events_with_the_new_values(
    label, admin_client, admin_user, allowed_root
):
    edit = EDITS[label]
    obj = edit.make(allowed_root)
    app, model = label.split(".")
    url = reverse(f"admin:{app}_{model.lower()}_change", args=[obj.pk])
    page = admin_client.get(url)
    assert page.status_code == 200, label
    data = form_data(page)
    _set(data, page, edit.field, edit.value)
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    saved = admin_client.post(url, {**data, "_save": "Save"})

    assert saved.status_code == 302, (label, page.context["adminform"].form.errors, _errors(saved))
    changed = _events_since(before).filter(object_id=str(obj.pk))
    assert changed.exists(), f"{label}: no audit event for the change"
    event = changed.latest("id")
    assert event.actor == admin_user.get_username()
    shown = json.dumps(event.data)
    expected = json.dumps(edit.value) if isinstance(edit.value, bool | int) else str(edit.value)
    assert expected.split(" ")[0] in shown, (label, event.action, event.data)

    if not edit.deletable:
        return
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    deleted = admin_client.post(reverse(f"admin:{app}_{model.lower()}_delete", args=[obj.pk]), {"post": "yes"})

    assert deleted.status_code == 302, label
    gone = _events_since(before).filter(object_id=str(obj.pk), action__contains="deleted")
    assert gone.exists(), f"{label}: {list(_events_since(before).values_list('action', flat=True))}"
    assert gone.latest("id").actor == admin_user.get_username()


def _errors(response) -> object:
    context = getattr(response, "context", None)
    if not context or "adminform" not in context:
        return response.status_code
    errors = dict(context["adminform"].form.errors)
    for inline in context.get("inline_admin_formsets", []):
        errors["inlines"] = inline.formset.errors
    return errors
