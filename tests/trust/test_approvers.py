"""Whoever set a run going, or changed what its plan depends on, may not approve it (service layer, database
trigger, API and admin alike)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction

from approvals import services
from approvals.models import ApprovalDecision
from remediation import pipeline, playbooks
from remediation.choices import RunStatus
from remediation.models import HealRun, Playbook
from tests.remediation.conftest import checkpoint_steps
from tests.support import inventory
from tests.support.runs import bloated_wal_db, wait_for_run

pytestmark = pytest.mark.django_db


def _open(run, *, tier=2, ineligible=(), depends_on=()):
    return services.open_request(
        run_id=run.pk,
        plan_hash=run.plan_hash,
        tier=tier,
        requested_by_id=None,
        context={},
        ineligible=list(ineligible),
        depends_on=list(depends_on),
    )


def test_the_user_who_raised_the_incident_cannot_approve_its_run(make_run, make_user, api_client):
    raiser = make_user("raiser", "GRACE senior approvers")
    run = make_run()
    request = _open(run, ineligible=[(raiser.pk, f"raised incident #{run.incident_id}")])
    api_client.force_authenticate(raiser)

    response = api_client.post(f"/api/approvals/{request.pk}/approve/", {"reason": "looks fine"}, format="json")

    assert response.status_code == 403
    assert f"you raised incident #{run.incident_id}: someone else must decide it" in response.json()["detail"]
    assert not request.decisions.exists()


def test_the_database_refuses_a_decision_by_an_ineligible_user_whatever_path_inserts_it(make_run, make_user):
    owner = make_user("channel-owner", "GRACE senior approvers")
    request = _open(make_run(), ineligible=[(owner.pk, "own the channel that raised the incident")])

    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalDecision.objects.create(request=request, user=owner, approve=True, reason="bypassing the service")

    assert not ApprovalDecision.objects.filter(request=request).exists()


def test_tier_three_needs_two_eligible_approvers_besides_the_initiator(make_run, make_user):
    raiser = make_user("raiser-3", "GRACE senior approvers")
    first, second = make_user("s-1", "GRACE senior approvers"), make_user("s-2", "GRACE senior approvers")
    request = _open(make_run(), tier=3, ineligible=[(raiser.pk, "raised the incident")])

    with pytest.raises(services.NotAllowed):
        services.decide(request.pk, user=raiser, approve=True, reason="mine")
    services.decide(request.pk, user=first, approve=True, reason="reviewed")
    assert services.approval_state(request.run_id, request.plan_hash) == "pending"
    services.decide(request.pk, user=second, approve=True, reason="reviewed too")

    assert services.approval_state(request.run_id, request.plan_hash) == "approved"


def test_whoever_last_edited_the_playbook_cannot_approve_a_plan_built_from_it(make_run, make_user):
    editor = make_user("editor", "GRACE senior approvers")
    other = make_user("reviewer", "GRACE senior approvers")
    playbook = Playbook(name="wal-edited", diagnosis_codes=["database_wal_bloat"], steps=checkpoint_steps(), tier=2)
    playbooks.save(playbook, actor=editor)
    run = make_run(playbook=playbook)
    request = _open(run, depends_on=[("remediation.playbook", str(playbook.pk))])

    refusal = services.may_decide(request, editor)

    assert "made the last change to remediation.playbook" in refusal
    assert services.may_decide(request, other) == ""


def test_a_policy_rule_edited_while_the_request_waits_bars_its_editor(make_run, make_user, admin_client):
    from approvals.models import PolicyRule

    editor = make_user("rule-editor", "GRACE senior approvers")
    editor.is_superuser = True
    editor.save()
    request = _open(make_run())
    rule = PolicyRule.objects.create(name="prod-tier", effect="require_tier", tier=2, match_environments=["prod"])
    admin_client.force_login(editor)
    edited = admin_client.post(
        f"/admin/approvals/policyrule/{rule.pk}/change/",
        {
            "name": "prod-tier",
            "enabled": "",
            "priority": 100,
            "effect": "require_tier",
            "tier": 2,
            "window_timezone": "UTC",
        },
    )

    assert edited.status_code == 302
    assert "changed policy rule" in services.may_decide(request, editor)


@pytest.mark.django_db(transaction=True)
def test_an_incident_raised_through_the_api_is_not_approvable_by_its_raiser(
    celery_worker, allowed_root, wal_rule, make_user, api_client
):
    raiser = make_user("api-raiser", "GRACE senior approvers")
    raiser.user_permissions.add(*Permission.objects.filter(codename__in=["add_incident", "view_incident"]))
    db = allowed_root / "raised.sqlite3"
    keeper = bloated_wal_db(db, rows=200)
    inventory.resource("raised", "sqlite", db, environment="production")
    Playbook.objects.create(
        name="wal", diagnosis_codes=["database_wal_bloat"], steps=checkpoint_steps(), cooldown_seconds=0
    )
    api_client.force_authenticate(raiser)

    posted = api_client.post(
        "/api/incidents/?wait=true",
        {"title": "raised WAL", "service": "raised", "environment": "staging"},
        format="json",
    )
    run = wait_for_run(posted.json()["id"], statuses=(RunStatus.AWAITING_APPROVAL,))
    request = run.approval_requests.get(status="pending")
    refused = api_client.post(f"/api/approvals/{request.pk}/approve/", {"reason": "mine"}, format="json")

    assert run.tier == 2  # production in the inventory, whatever the body claimed
    assert refused.status_code == 403 and "you raised incident" in refused.json()["detail"]
    assert pipeline.initiators(HealRun.objects.get(pk=run.pk))[0][0] == raiser.pk
    keeper.close()


def test_the_admin_review_page_says_why_the_raiser_cannot_decide(make_run, make_user, client):
    raiser = make_user("admin-raiser", "GRACE senior approvers")
    run = make_run()
    request = _open(run, ineligible=[(raiser.pk, f"raised incident #{run.incident_id}")])
    client.force_login(raiser)

    page = client.get(f"/admin/approvals/approvalrequest/{request.pk}/change/").content.decode()
    forged = client.post(
        f"/admin/approvals/approvalrequest/{request.pk}/change/", {"decision": "approve", "reason": "mine"}
    )

    assert 'id="decision-form"' not in page
    assert f"you raised incident #{run.incident_id}" in page
    assert 'id="ineligible"' in page and "admin-raiser" in page
    assert forged.status_code == 403
    assert not request.decisions.exists()
