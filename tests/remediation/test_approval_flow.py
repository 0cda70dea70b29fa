"""Runs that need a human: waiting, resuming on approval, and plans bound to what was approved."""

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from approvals import services as approvals
from approvals.models import ApprovalRequest
from incidents.services import Signal, ingest
from remediation.choices import RunStatus
from remediation.models import ActionAttempt, HealRun
from tests.remediation.conftest import checkpoint_steps, make_playbook
from tests.support import inventory
from tests.support.runs import bloated_wal_db, wait_for, wait_for_run, wal_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator(django_user_model):
    user = django_user_model.objects.create_user("oncall", password="pw-oncall-123456")
    user.user_permissions.add(Permission.objects.get(codename="approve_tier2"))
    return user


@pytest.fixture
def waiting_run(celery_worker, allowed_root, wal_rule):
    db = allowed_root / "approve.sqlite3"
    keeper = bloated_wal_db(db, rows=2000)
    make_playbook("wal-checkpoint-approved", "database_wal_bloat", checkpoint_steps(), tier=2)
    inventory.resource("approve-db", "sqlite", db)
    incident = ingest(Signal(source="api", title="approve WAL", service="approve-db")).incident
    run = wait_for_run(incident.pk, statuses=(RunStatus.AWAITING_APPROVAL,))
    yield run, db
    keeper.close()


def test_a_tier_2_run_waits_and_the_approval_resumes_it(waiting_run, operator):
    run, db = waiting_run
    request = ApprovalRequest.objects.get(run=run, status="pending")
    assert request.plan_hash == run.plan_hash
    assert request.context["plan"]["steps"][0]["params"]["path"] == str(db)
    assert not ActionAttempt.objects.filter(run=run).exists()

    approvals.decide(request.pk, user=operator, approve=True, reason="WAL checkpoint is safe")
    run = wait_for_run(run.incident_id)

    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert wal_bytes(db) <= 1024 * 1024


def test_editing_the_playbook_replaces_the_plan_and_voids_its_approvals(waiting_run, operator, admin_user):
    run, _ = waiting_run
    old = ApprovalRequest.objects.get(run=run, status="pending")
    client = APIClient()
    client.force_authenticate(admin_user)

    steps = checkpoint_steps(contract=[{"field": "wal_bytes", "op": "<=", "value": 4096}])
    response = client.patch(f"/api/playbooks/{run.playbook_id}/", {"steps": steps}, format="json")

    assert response.status_code == 200, response.json()
    new = wait_for(
        lambda: ApprovalRequest.objects.filter(run=run, status="pending").exclude(pk=old.pk).first(),
        what="the new plan's approval request",
    )
    run.refresh_from_db()
    old.refresh_from_db()
    assert old.status == "void"
    assert new.plan_hash == run.plan_hash != old.plan_hash
    assert run.plan["steps"][0]["contract"][0]["value"] == 4096
    assert run.events.filter(from_status="AWAITING_APPROVAL", to_status="PLANNED").exists()
    with pytest.raises(approvals.Conflict):
        approvals.decide(old.pk, user=operator, approve=True, reason="too late")


def test_raising_the_playbooks_tier_while_a_run_waits_needs_the_new_tiers_approvals(waiting_run, admin_user):
    run, _ = waiting_run
    client = APIClient()
    client.force_authenticate(admin_user)

    response = client.patch(
        f"/api/playbooks/{run.playbook_id}/",
        {"tier": 3, "steps": checkpoint_steps(contract=[{"field": "wal_bytes", "op": "<=", "value": 2048}])},
        format="json",
    )

    assert response.status_code == 200, response.json()
    new = wait_for(
        lambda: ApprovalRequest.objects.filter(run=run, status="pending", tier=3).first(),
        what="a tier-3 request for the new plan",
    )
    assert new.required_approvals == 2


def test_a_plan_changed_after_approval_is_not_executed(waiting_run, operator):
    run, db = waiting_run
    request = ApprovalRequest.objects.get(run=run, status="pending")
    tampered = dict(run.plan)
    tampered["steps"] = [{**run.plan["steps"][0], "params": {"path": "/etc/passwd"}}]
    HealRun.objects.filter(pk=run.pk).update(plan=tampered)  # behind the service layer's back
    before = wal_bytes(db)

    approvals.decide(request.pk, user=operator, approve=True, reason="looks fine")
    run = wait_for_run(run.incident_id)

    assert run.status == RunStatus.BLOCKED
    assert "plan changed" in run.status_reason
    assert not ActionAttempt.objects.filter(run=run).exists()
    assert wal_bytes(db) == before
