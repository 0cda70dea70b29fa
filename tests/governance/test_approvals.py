"""Approval requests and decisions: binding to the plan, distinct approvers, expiry, resume-once."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalDecision, ApprovalRequest, AuditEvent
from tests.governance.conftest import CONTEXT, plan_hash, resumes

pytestmark = pytest.mark.django_db


def _open(run, tier=2, text="plan", requested_by=None):
    return services.open_request(
        run_id=run.pk, plan_hash=plan_hash(text), tier=tier, requested_by_id=requested_by, context=CONTEXT
    )


def test_opening_a_request_is_idempotent_per_run_and_plan(make_run):
    run = make_run()

    first = _open(run)
    again = _open(run)

    assert first.pk == again.pk
    assert (first.status, first.required_approvals) == ("pending", 1)
    assert services.approval_state(run.pk, plan_hash()) == "pending"
    assert AuditEvent.objects.filter(action="approval.requested").count() == 1


def test_a_changed_plan_voids_the_pending_request(make_run):
    run = make_run()
    old = _open(run, text="plan-a")

    new = _open(run, text="plan-b")

    old.refresh_from_db()
    assert old.status == "void"
    assert new.status == "pending"
    assert services.approval_state(run.pk, plan_hash("plan-a")) == "void"
    assert services.approval_state(run.pk, plan_hash("plan-b")) == "pending"


def test_an_approval_does_not_carry_over_to_a_changed_plan(make_run, senior, django_capture_on_commit_callbacks):
    run = make_run()
    request = _open(run, text="plan-a")
    with django_capture_on_commit_callbacks(execute=True):
        services.decide(request.pk, user=senior, approve=True, reason="looks right")

    assert services.approval_state(run.pk, plan_hash("plan-a")) == "approved"
    assert services.approval_state(run.pk, plan_hash("plan-b")) == "none"


def test_tier_two_needs_one_approval_and_resumes_the_run_once(
    make_run, operator, published, django_capture_on_commit_callbacks
):
    run = make_run()
    request = _open(run)

    with django_capture_on_commit_callbacks(execute=True):
        decided = services.decide(request.pk, user=operator, approve=True, reason="safe: checkpoint only")

    assert decided.status == "approved"
    assert "operator-1" in decided.status_reason
    assert resumes(published) == [("remediation.resume_run", [run.pk], "heal.local")]
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["approval.requested", "approval.decision", "approval.approved"]


def test_tier_three_needs_two_distinct_approvers(
    make_run, senior, senior2, published, django_capture_on_commit_callbacks
):
    run = make_run()
    request = _open(run, tier=3)
    assert request.required_approvals == 2

    with django_capture_on_commit_callbacks(execute=True):
        after_first = services.decide(request.pk, user=senior, approve=True, reason="first look ok")
    assert after_first.status == "pending"
    assert resumes(published) == []

    with django_capture_on_commit_callbacks(execute=True):
        after_second = services.decide(request.pk, user=senior2, approve=True, reason="second look ok")

    assert after_second.status == "approved"
    assert resumes(published) == [("remediation.resume_run", [run.pk], "heal.local")]


def test_the_same_user_approving_twice_counts_once(make_run, senior):
    run = make_run()
    request = _open(run, tier=3)
    services.decide(request.pk, user=senior, approve=True, reason="ok")

    with pytest.raises(services.Conflict, match="already decided"):
        services.decide(request.pk, user=senior, approve=True, reason="ok again")

    request.refresh_from_db()
    assert request.status == "pending"
    assert request.decisions.count() == 1


def test_the_database_refuses_a_second_decision_by_the_same_user(make_run, senior):
    request = _open(make_run(), tier=3)
    ApprovalDecision.objects.create(request=request, user=senior, approve=True, reason="ok")

    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalDecision.objects.create(request=request, user=senior, approve=False, reason="changed my mind")


def test_the_user_who_started_the_run_never_approves_it(make_run, senior):
    run = make_run(started_by=senior)
    request = _open(run, tier=2, requested_by=senior.pk)

    with pytest.raises(services.NotAllowed, match="you started this run"):
        services.decide(request.pk, user=senior, approve=True, reason="my own fix")

    assert request.decisions.count() == 0


def test_an_operator_cannot_approve_tier_three(make_run, operator):
    request = _open(make_run(), tier=3)

    with pytest.raises(services.NotAllowed, match="approve_tier3"):
        services.decide(request.pk, user=operator, approve=True, reason="ok")


def test_an_auditor_cannot_decide(make_run, make_user):
    auditor = make_user("auditor-1", "GRACE auditors")
    request = _open(make_run(), tier=2)

    with pytest.raises(services.NotAllowed):
        services.decide(request.pk, user=auditor, approve=False, reason="no")


def test_one_rejection_rejects_and_resumes_the_run(
    make_run, senior, senior2, published, django_capture_on_commit_callbacks
):
    run = make_run()
    request = _open(run, tier=3)
    services.decide(request.pk, user=senior, approve=True, reason="fine by me")

    with django_capture_on_commit_callbacks(execute=True):
        rejected = services.decide(request.pk, user=senior2, approve=False, reason="not during the sale")

    assert rejected.status == "rejected"
    assert "not during the sale" in rejected.status_reason
    assert services.approval_state(run.pk, plan_hash()) == "rejected"
    assert resumes(published) == [("remediation.resume_run", [run.pk], "heal.local")]


def test_a_decided_request_cannot_be_decided_again(make_run, operator, senior):
    request = _open(make_run(), tier=2)
    services.decide(request.pk, user=operator, approve=True, reason="ok")

    with pytest.raises(services.Conflict, match="no longer pending"):
        services.decide(request.pk, user=senior, approve=False, reason="too late")


def test_a_decision_needs_a_reason(make_run, operator):
    request = _open(make_run())

    with pytest.raises(ValidationError) as excinfo:
        services.decide(request.pk, user=operator, approve=True, reason="   ")

    assert "reason" in excinfo.value.message_dict


def test_expiry_escalates_the_run(make_run, operator, published, django_capture_on_commit_callbacks):
    run = make_run()
    request = _open(run)
    later = request.expires_at + timedelta(seconds=1)
    assert request.expires_at - request.created_at == timedelta(minutes=30)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.expire_due(now=later) == 1
    assert services.expire_due(now=later) == 0

    request.refresh_from_db()
    assert request.status == "expired"
    assert services.approval_state(run.pk, plan_hash()) == "expired"
    assert resumes(published) == [("remediation.resume_run", [run.pk], "heal.local")]
    assert AuditEvent.objects.filter(action="approval.expired", object_id=str(request.pk)).exists()


def test_deciding_an_overdue_request_expires_it(make_run, operator, django_capture_on_commit_callbacks):
    run = make_run()
    request = _open(run)
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(services.Conflict, match="expired"):
        services.decide(request.pk, user=operator, approve=True, reason="ok")

    request.refresh_from_db()
    assert request.status == "expired"
    assert request.decisions.count() == 0


def test_approval_ttl_comes_from_the_setting(make_run, settings):
    settings.GRACE_APPROVAL_TTL_MINUTES = 5
    request = _open(make_run())

    assert request.expires_at - request.created_at == timedelta(minutes=5)


def test_open_request_rejects_a_bad_plan_hash_and_tier(make_run):
    run = make_run()
    with pytest.raises(ValidationError) as bad_hash:
        services.open_request(run_id=run.pk, plan_hash="abc", tier=2, requested_by_id=None, context={})
    with pytest.raises(ValidationError) as bad_tier:
        services.open_request(run_id=run.pk, plan_hash=plan_hash(), tier=1, requested_by_id=None, context={})

    assert "plan_hash" in bad_hash.value.message_dict
    assert "tier" in bad_tier.value.message_dict


def test_void_pending_voids_and_audits(make_run):
    run = make_run()
    _open(run)

    assert services.void_pending(run.pk, reason="run cancelled") == 1
    assert services.void_pending(run.pk, reason="run cancelled") == 0
    assert services.approval_state(run.pk, plan_hash()) == "void"
    assert AuditEvent.objects.filter(action="approval.voided").count() == 1


def test_runs_decided_a_while_ago_without_a_pending_request_are_reported_for_their_resume(make_run, operator):
    waiting, redecided = make_run(), make_run()
    for run in (waiting, redecided):
        request = _open(run)
        services.decide(request.pk, user=operator, approve=True, reason="ok")  # on_commit never runs here
    _open(redecided, text="new plan")  # a new request waits for the changed plan
    decided_at = ApprovalRequest.objects.get(run=waiting).decided_at

    assert services.decided_runs(now=decided_at + timedelta(seconds=10)) == []
    assert services.decided_runs(now=decided_at + timedelta(seconds=61)) == [waiting.pk]
    assert services.decided_runs(now=decided_at + timedelta(days=2)) == []  # too old: left to humans


def test_the_reaper_resends_the_lost_resume_of_a_run_still_waiting(make_run, operator, published):
    from remediation import lifecycle

    waiting, moved_on = make_run(), make_run()
    for run in (waiting, moved_on):
        request = _open(run)
        services.decide(request.pk, user=operator, approve=True, reason="ok")
    moved_on.status = "APPROVED"
    moved_on.save(update_fields=["status"])
    decided_at = ApprovalRequest.objects.get(run=waiting).decided_at

    counts = lifecycle.reap(now=decided_at + timedelta(seconds=61))

    assert counts["resumed"] == 1
    assert resumes(published) == [("remediation.resume_run", [waiting.pk], "heal.local")]
