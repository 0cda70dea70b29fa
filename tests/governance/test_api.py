"""The approvals API: the queue, approve/reject with a reason, 403 and 409 where they belong."""

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalRequest, GovernanceSettings
from tests.governance.conftest import CONTEXT, plan_hash, resumes

pytestmark = pytest.mark.django_db


def _open(run, tier=2, text="plan", requested_by=None):
    return services.open_request(
        run_id=run.pk, plan_hash=plan_hash(text), tier=tier, requested_by_id=requested_by, context=CONTEXT
    )


def test_the_queue_lists_pending_requests_with_their_context(api_client, make_run, make_user):
    auditor = make_user("auditor-1", "GRACE auditors")
    decided_run, pending_run = make_run(), make_run()
    decided = _open(decided_run)
    services.void_pending(decided_run.pk, reason="run cancelled")
    pending = _open(pending_run, tier=3)
    api_client.force_authenticate(auditor)

    everything = api_client.get("/api/approvals/").json()
    only_pending = api_client.get("/api/approvals/", {"status": "pending"}).json()
    detail = api_client.get(f"/api/approvals/{pending.pk}/").json()

    assert [row["id"] for row in everything["results"]] == [pending.pk, decided.pk]
    assert [row["id"] for row in only_pending["results"]] == [pending.pk]
    assert detail["tier"] == 3
    assert detail["required_approvals"] == 2
    assert detail["approvals"] == 0
    assert detail["context"]["contract"] == CONTEXT["contract"]
    assert detail["plan_hash"] == plan_hash()
    assert detail["shadow"] is False


def test_an_approval_through_the_api_resumes_the_run(
    api_client, make_run, operator, published, django_capture_on_commit_callbacks
):
    run = make_run()
    request = _open(run)
    api_client.force_authenticate(operator)

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(f"/api/approvals/{request.pk}/approve/", {"reason": "checked the plan"})

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "approved"
    assert response.json()["decisions"][0]["user"] == "operator-1"
    assert resumes(published) == [("remediation.resume_run", [run.pk], "heal.local")]


def test_a_rejection_needs_a_reason(api_client, make_run, operator):
    request = _open(make_run())
    api_client.force_authenticate(operator)

    response = api_client.post(f"/api/approvals/{request.pk}/reject/", {"reason": " "}, format="json")

    assert response.status_code == 400
    assert "reason" in response.json()
    assert ApprovalRequest.objects.get(pk=request.pk).status == "pending"


def test_self_approval_is_refused_with_403(api_client, make_run, senior):
    run = make_run(started_by=senior)
    request = _open(run, requested_by=senior.pk)
    api_client.force_authenticate(senior)

    response = api_client.post(f"/api/approvals/{request.pk}/approve/", {"reason": "my fix is fine"})

    assert response.status_code == 403
    assert "you started this run" in response.json()["detail"]


def test_approving_without_the_permission_is_403(api_client, make_run, make_user, operator):
    auditor = make_user("auditor-1", "GRACE auditors")
    tier3 = _open(make_run(), tier=3)
    api_client.force_authenticate(auditor)
    assert api_client.post(f"/api/approvals/{tier3.pk}/approve/", {"reason": "ok"}).status_code == 403

    api_client.force_authenticate(operator)
    response = api_client.post(f"/api/approvals/{tier3.pk}/approve/", {"reason": "ok"})

    assert response.status_code == 403
    assert "approve_tier3" in response.json()["detail"]


def test_deciding_twice_or_after_the_end_is_409(api_client, make_run, senior, senior2):
    tier3 = _open(make_run(), tier=3)
    api_client.force_authenticate(senior)
    assert api_client.post(f"/api/approvals/{tier3.pk}/approve/", {"reason": "ok"}).status_code == 200

    twice = api_client.post(f"/api/approvals/{tier3.pk}/approve/", {"reason": "ok again"})
    api_client.force_authenticate(senior2)
    assert api_client.post(f"/api/approvals/{tier3.pk}/reject/", {"reason": "no"}).status_code == 200
    after_end = api_client.post(f"/api/approvals/{tier3.pk}/approve/", {"reason": "late"})

    assert twice.status_code == 409
    assert "already decided" in twice.json()["detail"]
    assert after_end.status_code == 409
    assert "rejected" in after_end.json()["detail"]


def test_an_expired_request_is_409(api_client, make_run, operator):
    request = _open(make_run())
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    api_client.force_authenticate(operator)

    response = api_client.post(f"/api/approvals/{request.pk}/approve/", {"reason": "ok"})

    assert response.status_code == 409
    assert "expired" in response.json()["detail"]
    assert ApprovalRequest.objects.get(pk=request.pk).status == "expired"


def test_anonymous_callers_get_401_and_users_without_view_permission_403_or_404(api_client, make_run, make_user):
    request = _open(make_run())
    assert api_client.get("/api/approvals/").status_code == 401

    api_client.force_authenticate(make_user("nobody"))

    assert api_client.get("/api/approvals/").status_code == 403
    # An id is not confirmed to a user who may not view approval requests (tests/test_read_scope.py).
    assert api_client.post(f"/api/approvals/{request.pk}/approve/", {"reason": "ok"}).status_code == 404


def test_the_api_shows_shadow_mode(api_client, make_run, operator, settings):
    settings.GRACE_SHADOW_MODE = False
    request = _open(make_run())
    api_client.force_authenticate(operator)
    assert api_client.get("/api/governance/").json()["shadow_mode"] is False

    GovernanceSettings.objects.create(pk=1, shadow_mode=True)

    assert api_client.get("/api/governance/").json() == {
        "shadow_mode": True,
        "shadow_mode_from_setting": False,
        "approval_ttl_minutes": 30,
    }
    assert api_client.get(f"/api/approvals/{request.pk}/").json()["shadow"] is True


def test_policy_rules_are_readable_not_writable(api_client, admin_user):
    from approvals import defaults

    defaults.install()
    api_client.force_authenticate(admin_user)

    rules = api_client.get("/api/policy-rules/").json()["results"]

    assert [r["name"] for r in rules][0] == "deny-unknown-diagnosis"
    assert api_client.post("/api/policy-rules/", {"name": "x"}).status_code == 405
