"""Every change made in the admin is audited with its before and after values: GRACE's own configuration,
Django's users and groups, API tokens and beat schedules alike."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from approvals.groups import SENIOR_APPROVERS, ensure_groups
from approvals.models import AuditEvent
from grace_site.admin import AuditedAdmin, ReadOnlyAdmin
from remediation import playbooks
from remediation.models import Playbook

pytestmark = pytest.mark.django_db

# Admins whose writes go through a service of their own app, which audits them (or that allow no writes).
THROUGH_SERVICES = {
    "approvals.ApprovalRequest": "decisions go through approvals.services.decide",
    "approvals.AuditEvent": "read-only: the audit log itself",
    "incidents.Incident": "read-only fields; resolve and ignore go through incidents.services",
    "incidents.Service": "incidents.inventory.save_service / delete_service",
    "incidents.Resource": "incidents.inventory.save_resource / delete_resource",
    "incidents.Channel": "incidents.channels.save / issue_token / delete",
    "remediation.HealRun": "read-only; retry, cancel and rollback go through remediation.lifecycle",
    "remediation.Playbook": "remediation.playbooks.save / delete",
    "approvals.ApiToken": "approvals.tokens.issue / revoke",
}


def test_every_admin_is_audited_read_only_or_writes_through_an_audited_service():
    unaccounted = [
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if not isinstance(model_admin, AuditedAdmin | ReadOnlyAdmin) and model._meta.label not in THROUGH_SERVICES
    ]

    assert not unaccounted, f"admins that write without an audit: {unaccounted}"


def test_adding_a_user_to_the_approver_group_is_audited_with_the_groups_before_and_after(
    admin_client, django_user_model
):
    ensure_groups()
    senior = Group.objects.get(name=SENIOR_APPROVERS)
    user = django_user_model.objects.create_user("newbie", password="pw-newbie-123456")

    response = admin_client.post(
        f"/admin/auth/user/{user.pk}/change/",
        {
            "username": "newbie",
            "is_active": "on",
            "groups": [senior.pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="config.changed", object_type="auth.user", object_id=str(user.pk))
    assert event.data["changes"]["groups"] == {"before": [], "after": [senior.pk]}
    assert event.actor == "root"
    assert "pbkdf2" not in str(event.data)


def test_disabling_a_beat_schedule_with_the_admin_action_is_audited(admin_client):
    every = IntervalSchedule.objects.create(every=30, period="seconds")
    task = PeriodicTask.objects.create(name="sweep", task="incidents.sweep_host", interval=every, enabled=True)

    admin_client.post(
        "/admin/django_celery_beat/periodictask/", {"action": "disable_tasks", "_selected_action": [task.pk]}
    )

    task.refresh_from_db()
    assert task.enabled is False
    event = AuditEvent.objects.get(action="config.changed", object_type="django_celery_beat.periodictask")
    assert event.data["changes"]["enabled"] == {"before": True, "after": False}
    assert event.data["admin_action"] == "disable_tasks"


def test_deleting_playbooks_in_the_admin_single_or_bulk_is_audited(admin_client):
    made = []
    for name in ("one", "two", "three"):
        playbook = Playbook(name=name, diagnosis_codes=["x"], steps=[])
        playbooks.save(playbook, actor="setup")
        made.append(playbook)

    admin_client.post(f"/admin/remediation/playbook/{made[0].pk}/delete/", {"post": "yes"})
    admin_client.post(
        "/admin/remediation/playbook/",
        {"action": "delete_selected", "_selected_action": [made[1].pk, made[2].pk], "post": "yes"},
    )

    assert not Playbook.objects.exists()
    deleted = AuditEvent.objects.filter(action="playbook.deleted")
    assert sorted(e.data["before"]["name"] for e in deleted) == ["one", "three", "two"]


def test_an_api_token_issued_in_the_admin_is_shown_once_stored_as_a_digest_and_audited_without_its_key(
    admin_client, django_user_model, api_client
):
    from approvals.models import ApiToken

    user = django_user_model.objects.create_user("bot", password="pw-bot-123456789")

    page = admin_client.post("/admin/approvals/apitoken/add/", {"user": user.pk, "name": "ci"}).content.decode()

    key = page.split('id="secret-once"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    token = ApiToken.objects.get(user=user)
    assert key.startswith("gra_") and token.hint == key[:10]
    assert key not in str(ApiToken.objects.values().get(pk=token.pk))
    assert key not in admin_client.get("/admin/approvals/apitoken/").content.decode()
    event = AuditEvent.objects.get(action="token.issued", object_id=str(token.pk))
    assert key not in str(event.data)
    assert api_client.get("/api/runs/", HTTP_AUTHORIZATION=f"Token {key}").status_code in (200, 403)
    admin_client.post(f"/admin/approvals/apitoken/{token.pk}/delete/", {"post": "yes"})
    assert api_client.get("/api/runs/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401
    assert AuditEvent.objects.filter(action="token.revoked").count() == 1


def test_editing_a_diagnosis_rule_records_the_old_and_new_values(admin_client):
    from incidents.models import DiagnosisRule

    rule = DiagnosisRule.objects.create(name="cpu", code="high_cpu", confidence=0.5)

    admin_client.post(
        f"/admin/incidents/diagnosisrule/{rule.pk}/change/",
        {
            "name": "cpu",
            "position": 100,
            "enabled": "on",
            "code": "high_cpu",
            "confidence": 0.9,
            "label_equals": "{}",
            "label_regex": "{}",
            "thresholds": "[]",
        },
    )

    event = AuditEvent.objects.get(action="config.changed", object_type="incidents.diagnosisrule")
    assert event.data["changes"] == {"confidence": {"before": 0.5, "after": 0.9}}
