"""The admin: approval queue and review page, decisions with a reason, audit browser with chain check."""

import pytest
from django.contrib.messages import get_messages

from approvals import audit, services
from approvals.models import AuditEvent, GovernanceSettings, PolicyRule
from tests.governance.conftest import CONTEXT, plan_hash, resumes
from tests.support import audit as audit_lock

pytestmark = pytest.mark.django_db

QUEUE = "/admin/approvals/approvalrequest/"


def _open(run, tier=2, text="plan", requested_by=None):
    return services.open_request(
        run_id=run.pk, plan_hash=plan_hash(text), tier=tier, requested_by_id=requested_by, context=CONTEXT
    )


def test_the_queue_shows_pending_requests_first_with_their_context(client, make_run, operator):
    old = _open(make_run(service="billing-db"))
    services.void_pending(old.run_id, reason="cancelled")
    pending = _open(make_run(), tier=3)
    client.force_login(operator)

    page = client.get(QUEUE).content.decode()

    assert page.index(f"Review #{pending.pk}") < page.index(f"View #{old.pk}")
    assert "sqlite_wal_bloat" in page and "0/2, tier 3" in page and "sqlite.checkpoint" in page


def test_the_review_page_shows_plan_contract_snapshot_policy_and_explanation(client, make_run, operator):
    request = _open(make_run())
    client.force_login(operator)

    page = client.get(f"{QUEUE}{request.pk}/change/").content.decode()

    assert "sqlite.checkpoint" in page
    assert "wal_bytes" in page
    assert "0.42" in page  # the learned confidence
    assert "sqlite backup before checkpoint" in page
    assert "builtin:production" in page
    assert plan_hash() in page
    assert 'id="decision-form"' in page


def test_approving_in_the_admin_records_the_reason_and_resumes_the_run(
    client, make_run, operator, published, django_capture_on_commit_callbacks
):
    run = make_run()
    request = _open(run)
    client.force_login(operator)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{QUEUE}{request.pk}/change/", {"decision": "approve", "reason": "plan is safe"})

    assert response.status_code == 302
    request.refresh_from_db()
    assert request.status == "approved"
    assert request.decisions.get().reason == "plan is safe"
    assert resumes(published) == [("remediation.resume_run", [run.pk], "heal.local")]
    assert "resumes" in [str(m) for m in get_messages(response.wsgi_request)][0]


def test_the_admin_requires_a_reason(client, make_run, operator):
    request = _open(make_run())
    client.force_login(operator)

    response = client.post(f"{QUEUE}{request.pk}/change/", {"decision": "reject", "reason": ""})

    assert response.status_code == 200
    assert "A reason is required." in response.content.decode()
    request.refresh_from_db()
    assert request.status == "pending"


def test_self_approval_is_refused_in_the_admin(client, make_run, senior):
    run = make_run(started_by=senior)
    request = _open(run, requested_by=senior.pk)
    client.force_login(senior)

    page = client.get(f"{QUEUE}{request.pk}/change/").content.decode()
    forged = client.post(f"{QUEUE}{request.pk}/change/", {"decision": "approve", "reason": "mine"})

    assert 'id="decision-form"' not in page
    assert "you started this run" in page
    assert forged.status_code == 403
    assert request.decisions.count() == 0


def test_an_operator_sees_but_cannot_decide_tier_three(client, make_run, operator):
    request = _open(make_run(), tier=3)
    client.force_login(operator)

    page = client.get(f"{QUEUE}{request.pk}/change/").content.decode()
    forged = client.post(f"{QUEUE}{request.pk}/change/", {"decision": "approve", "reason": "ok"})

    assert "approve_tier3" in page
    assert forged.status_code == 403


def test_a_second_decision_by_the_same_user_is_refused_with_a_message(client, make_run, senior):
    request = _open(make_run(), tier=3)
    client.force_login(senior)
    client.post(f"{QUEUE}{request.pk}/change/", {"decision": "approve", "reason": "ok"})

    again = client.post(f"{QUEUE}{request.pk}/change/", {"decision": "approve", "reason": "ok"}, follow=True)

    assert "already decided" in again.content.decode()
    assert request.decisions.count() == 1


def test_users_without_governance_permissions_cannot_open_the_queue(client, make_run, make_user):
    request = _open(make_run())
    client.force_login(make_user("staff-only"))

    assert client.get(QUEUE).status_code == 403
    assert client.get(f"{QUEUE}{request.pk}/change/").status_code == 403


def test_the_audit_browser_is_read_only_and_verifies_the_chain(client, make_user):
    auditor = make_user("auditor-1", "GRACE auditors")
    for i in range(3):
        audit.record("test.event", actor="tester", obj=("thing", i))
    client.force_login(auditor)

    audit.seal()
    listing = client.get("/admin/approvals/auditevent/", {"actor": "tester"})
    intact = client.post("/admin/approvals/auditevent/verify/", follow=True)
    audit_lock.drop_triggers()
    AuditEvent.objects.filter(seal__seq=2).update(actor="mallory")
    broken = client.post("/admin/approvals/auditevent/verify/", follow=True)

    assert listing.status_code == 200 and 'id="verify-chain"' in listing.content.decode()
    assert "audit chain intact: 3 events verified" in intact.content.decode()
    assert "broken at seq 2" in broken.content.decode()
    assert client.get("/admin/approvals/auditevent/1/delete/").status_code == 403


def test_policy_rules_are_edited_with_plain_lists_and_audited(client, admin_user):
    client.force_login(admin_user)

    response = client.post(
        "/admin/approvals/policyrule/add/",
        {
            "name": "freeze-orders",
            "priority": "20",
            "effect": "deny",
            "enabled": "on",
            "match_services": "orders-*, billing-db",
            "window_weekdays": ["5", "6"],
            "window_start": "00:00",
            "window_end": "23:59",
            "window_timezone": "Europe/Paris",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    rule = PolicyRule.objects.get(name="freeze-orders")
    assert rule.match_services == ["orders-*", "billing-db"]
    assert rule.window_weekdays == [5, 6]
    event = AuditEvent.objects.get(action="config.created", object_type="approvals.policyrule")
    assert (event.actor, event.object_id) == ("root", str(rule.pk))
    assert event.data["changes"]["match_services"] == {"before": None, "after": ["orders-*", "billing-db"]}


def test_the_shadow_switch_is_a_singleton_and_audited(client, admin_user):
    client.force_login(admin_user)

    assert client.get("/admin/approvals/governancesettings/").url == "/admin/approvals/governancesettings/1/change/"
    client.post("/admin/approvals/governancesettings/1/change/", {"shadow_mode": "on"})

    assert GovernanceSettings.objects.get(pk=1).shadow_mode is True
    changed = AuditEvent.objects.get(action="config.changed", object_type="approvals.governancesettings")
    assert changed.data["changes"]["shadow_mode"] == {"before": False, "after": True}
    assert "Shadow mode is ON" in client.get(QUEUE, follow=True).content.decode()
