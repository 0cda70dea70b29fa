"""Read scope: every endpoint names its permission; ids a user may not view are 404 whether they exist or not."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone
from drf_spectacular.generators import EndpointEnumerator
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.views import APIView

from approvals import services as approvals
from approvals.groups import OPERATORS, ensure_groups
from approvals.models import AuditEvent
from incidents.models import Incident
from learning import benchmarks
from remediation.models import HealRun, Playbook

pytestmark = pytest.mark.django_db

UNKNOWN = 987654

# The view permission each model-less read needs (docs/hostile-input.md, README).
READS = {
    "/api/resilience/": "remediation.view_healrun",
    "/api/cloud/status/?family=docker": "remediation.view_healrun",
    "/api/governance/": "approvals.view_policyrule",
    "/api/actions/": "remediation.view_playbook",
}


def _user(django_user_model, name: str, *perms: str):
    user = django_user_model.objects.create_user(name, password=f"pw-{name}-123456")
    for dotted in perms:
        app_label, codename = dotted.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return django_user_model.objects.get(pk=user.pk)  # fresh: no cached permissions


@pytest.fixture
def objects() -> dict[str, int]:
    now = timezone.now()
    incident = Incident.objects.create(fingerprint="scope", title="t", first_seen=now, last_seen=now)
    playbook = Playbook.objects.create(name="scope", diagnosis_codes=["x"], steps=[], tier=1)
    run = HealRun.objects.create(incident=incident, playbook=playbook, status="AWAITING_APPROVAL", family="local")
    request = approvals.open_request(run_id=run.pk, plan_hash="0" * 64, tier=3, requested_by_id=None, context={})
    from approvals import defaults

    defaults.install()
    from approvals.models import PolicyRule

    return {
        "incidents": incident.pk,
        "playbooks": playbook.pk,
        "runs": run.pk,
        "approvals": request.pk,
        "policy-rules": PolicyRule.objects.values_list("pk", flat=True).first(),
        "audit": AuditEvent.objects.values_list("id", flat=True).first(),
        "verification/runs": benchmarks.create_run("smoke").pk,
    }


# Endpoints that need no Django permission: health and the API's schema and docs are public (AllowAny,
# declared), the webhook authenticates its own token.
NO_DJANGO_PERMISSION = {"/api/health/", "/api/schema/", "/api/docs/", "/api/webhooks/alertmanager/"}


def test_every_endpoint_declares_a_permission_beyond_being_logged_in():
    missing = []
    for path, _regex, method, callback in EndpointEnumerator().get_api_endpoints():
        declared = callback.initkwargs.get("permission_classes") or callback.cls.permission_classes
        if declared is APIView.permission_classes:
            missing.append(f"{method} {path}: none declared")
        elif set(declared) <= {IsAuthenticated, AllowAny} and path not in NO_DJANGO_PERMISSION:
            missing.append(f"{method} {path}: only {', '.join(cls.__name__ for cls in declared)}")

    assert missing == []


@pytest.mark.parametrize("path", list(READS))
def test_an_intake_only_account_cannot_read_it_and_the_view_permission_can(api_client, django_user_model, path):
    api_client.force_authenticate(_user(django_user_model, "intake", "incidents.add_incident"))
    refused = api_client.get(path)
    api_client.force_authenticate(_user(django_user_model, "reader", READS[path]))
    allowed = api_client.get(path)

    assert refused.status_code == 403
    assert READS[path] in refused.json()["detail"]
    assert allowed.status_code == 200, allowed.content


@pytest.mark.parametrize("path", list(READS))
def test_the_operators_group_still_reads_it(api_client, django_user_model, path):
    ensure_groups()
    operator = django_user_model.objects.create_user("op", password="pw-op-123456")
    operator.groups.add(Group.objects.get(name=OPERATORS))
    api_client.force_authenticate(operator)

    assert api_client.get(path).status_code == 200


@pytest.mark.parametrize(
    "kind", ["incidents", "playbooks", "runs", "approvals", "policy-rules", "audit", "verification/runs"]
)
def test_reading_an_id_without_the_view_permission_is_404_whether_it_exists_or_not(
    api_client, django_user_model, objects, kind
):
    api_client.force_authenticate(_user(django_user_model, "outsider", "incidents.add_incident"))

    existing = api_client.get(f"/api/{kind}/{objects[kind]}/")
    unknown = api_client.get(f"/api/{kind}/{UNKNOWN}/")

    assert (existing.status_code, unknown.status_code) == (404, 404)
    assert existing.json() == unknown.json()


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_deciding_without_the_view_permission_tells_nothing_about_the_request(
    api_client, django_user_model, objects, verb
):
    api_client.force_authenticate(_user(django_user_model, "tier2", "approvals.approve_tier2"))

    existing = api_client.post(f"/api/approvals/{objects['approvals']}/{verb}/", {"reason": "ok"})
    unknown = api_client.post(f"/api/approvals/{UNKNOWN}/{verb}/", {"reason": "ok"})

    assert (existing.status_code, unknown.status_code) == (404, 404)
    assert existing.json() == unknown.json()
    assert "tier" not in existing.content.decode()


@pytest.mark.parametrize(
    ("path", "perm"),
    [
        ("/api/runs/{runs}/cancel/", "remediation.change_healrun"),
        ("/api/runs/{runs}/rollback/", "remediation.change_healrun"),
        ("/api/incidents/{incidents}/heal/", "remediation.add_healrun"),
    ],
)
def test_acting_on_an_id_without_the_view_permission_is_404_whether_it_exists_or_not(
    api_client, django_user_model, objects, path, perm
):
    api_client.force_authenticate(_user(django_user_model, "blind", perm))

    existing = api_client.post(path.format(**objects), {})
    unknown = api_client.post(path.format(runs=UNKNOWN, incidents=UNKNOWN), {})

    assert (existing.status_code, unknown.status_code) == (404, 404)
    assert existing.json() == unknown.json()


def test_changing_a_playbook_without_the_view_permission_is_404(api_client, django_user_model, objects):
    api_client.force_authenticate(_user(django_user_model, "editor", "remediation.change_playbook"))

    existing = api_client.patch(f"/api/playbooks/{objects['playbooks']}/", {"tier": 2})
    unknown = api_client.patch(f"/api/playbooks/{UNKNOWN}/", {"tier": 2})

    assert (existing.status_code, unknown.status_code) == (404, 404)
    assert Playbook.objects.get(pk=objects["playbooks"]).tier == 1


@pytest.mark.parametrize("verb", ["cancel", "rollback"])
def test_cancel_and_rollback_need_change_healrun_not_add_healrun(api_client, django_user_model, objects, verb):
    api_client.force_authenticate(
        _user(django_user_model, "adder", "remediation.view_healrun", "remediation.add_healrun")
    )

    refused = api_client.post(f"/api/runs/{objects['runs']}/{verb}/")

    assert refused.status_code == 403
    assert "remediation.change_healrun" in refused.json()["detail"]
    assert HealRun.objects.get(pk=objects["runs"]).status == "AWAITING_APPROVAL"


def test_a_user_with_change_healrun_cancels_a_run(api_client, django_user_model, objects):
    api_client.force_authenticate(
        _user(django_user_model, "changer", "remediation.view_healrun", "remediation.change_healrun")
    )

    response = api_client.post(f"/api/runs/{objects['runs']}/cancel/")

    assert response.status_code == 200, response.content
    assert HealRun.objects.get(pk=objects["runs"]).status == "CANCELLED"
