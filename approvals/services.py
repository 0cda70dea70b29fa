"""Approval requests and decisions.

A request is bound to the sha256 of the exact plan it shows; the pipeline asks
``approval_state(run_id, plan_hash)`` before executing, so a plan changed after
approval is never executed under the old approval. Every state change is a
conditional UPDATE on the request's status (so it happens once) and writes the
audit log in the same transaction. Hand-offs to the pipeline go by the pinned
task name ``remediation.resume_run``, on commit.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import audit
from approvals.choices import NotificationEvent, RequestStatus
from approvals.context import ApprovalContext
from approvals.models import ApprovalDecision, ApprovalRequest, AuditEvent, IneligibleApprover, PolicyRule
from approvals.notifications import notify
from grace_site import handoff

__all__ = [
    "Conflict",
    "DecisionError",
    "NotAllowed",
    "approval_state",
    "decide",
    "expire_due",
    "expire_request",
    "may_decide",
    "notify",
    "open_request",
    "decided_runs",
    "required_approvals",
    "void_pending",
]

RESUME_TASK = "remediation.resume_run"
POLICY_RULE_OBJECT = PolicyRule._meta.label_lower
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DecisionError(Exception):
    """A decision was refused; ``str(exc)`` says why."""


class NotAllowed(DecisionError):
    """The user may not decide this request (permission, or their own run): HTTP 403."""


class Conflict(DecisionError):
    """The request is no longer pending, has expired, or this user already decided: HTTP 409."""


def required_approvals(tier: int) -> int:
    return 2 if tier >= 3 else 1


def _resume_on_commit(run_id: int) -> None:
    # The decision is committed either way; a lost hand-off is re-sent by the pipeline's reaper (decided_runs).
    handoff.send_on_commit(RESUME_TASK, run_id)


def _json(value: dict) -> dict:
    return json.loads(json.dumps(value or {}, cls=DjangoJSONEncoder))


def _live(run_id: int, plan_hash: str) -> ApprovalRequest | None:
    return ApprovalRequest.objects.filter(run_id=run_id, plan_hash=plan_hash).exclude(status=RequestStatus.VOID).first()


def open_request(
    *,
    run_id: int,
    plan_hash: str,
    tier: int,
    requested_by_id: int | None,
    context: ApprovalContext | dict,
    ineligible: list[tuple[int | None, str]] = (),
    depends_on: list[tuple[str, str]] = (),
) -> ApprovalRequest:
    """The pending (or already decided) request for this exact plan, creating it when needed.

    ``ineligible``: (user id, why) of people who may not decide it (they raised the incident, own the channel
    that did, started the run); the database refuses their decisions. ``depends_on``: the objects the plan
    depends on as the audit log names them (the playbook, the run): whoever edited them may not decide either.
    Idempotent per (run, plan). A new plan voids the run's other pending request.
    Audited; notifies "approval_needed" on commit.
    """
    if not isinstance(plan_hash, str) or not _SHA256.match(plan_hash):
        raise ValidationError({"plan_hash": "must be a lowercase hex sha256 (64 characters)"})
    if tier not in (2, 3):
        raise ValidationError({"tier": f"only tiers 2 and 3 need approval, got {tier!r}"})
    # The caller holds the run (the gate opens the request in the transaction that moved the run); the partial
    # unique constraints (one pending request per run, one live request per plan) are the backstop.
    with transaction.atomic():
        existing = _live(run_id, plan_hash)
        if existing is not None:
            return existing
        voided = void_pending(run_id, reason="the plan changed; a new request replaces this one")
        now = timezone.now()
        try:
            with transaction.atomic():
                request = ApprovalRequest.objects.create(
                    created_at=now,
                    run_id=run_id,
                    plan_hash=plan_hash,
                    tier=tier,
                    required_approvals=required_approvals(tier),
                    requested_by_id=requested_by_id,
                    context=_json(ApprovalContext.from_json(context).to_json()),
                    depends_on=[[str(kind), str(pk)] for kind, pk in depends_on],
                    expires_at=now + timedelta(minutes=settings.GRACE_APPROVAL_TTL_MINUTES),
                )
        except IntegrityError:
            existing = _live(run_id, plan_hash)  # a concurrent open of the same plan won
            if existing is None:
                raise
            return existing
        barred: dict[int, str] = {}
        for user_id, why in [*ineligible, (requested_by_id, "started this run")]:
            if user_id:
                barred.setdefault(user_id, why)
        IneligibleApprover.objects.bulk_create(
            IneligibleApprover(request=request, user_id=user_id, reason=why[:300]) for user_id, why in barred.items()
        )
        audit.record(
            "approval.requested",
            obj=request,
            data={
                "run_id": run_id,
                "plan_hash": plan_hash,
                "tier": tier,
                "required_approvals": request.required_approvals,
                "expires_at": request.expires_at,
                "voided": voided,
                "ineligible": [{"user": user_id, "why": why} for user_id, why in barred.items()],
                "depends_on": request.depends_on,
            },
        )
        notify(
            NotificationEvent.APPROVAL_NEEDED,
            run_id=run_id,
            summary=f"Run #{run_id} needs {request.required_approvals} approval(s) (tier {tier})",
            context={**request.context, "approval_request": request.pk, "expires_at": request.expires_at},
        )
    return request


def approval_state(run_id: int, plan_hash: str, *, now: datetime | None = None) -> str:
    """ "approved" | "pending" | "rejected" | "expired" | "void" | "none" for this run and exact plan."""
    now = now or timezone.now()
    request = (
        ApprovalRequest.objects.filter(run_id=run_id, plan_hash=plan_hash)
        .exclude(status=RequestStatus.VOID)
        .order_by("-pk")
        .first()
    )
    if request is None:
        void = ApprovalRequest.objects.filter(run_id=run_id, plan_hash=plan_hash, status=RequestStatus.VOID)
        return "void" if void.exists() else "none"
    if request.status == RequestStatus.PENDING and request.expires_at <= now:
        return RequestStatus.EXPIRED.value
    return str(request.status)


def may_decide(request: ApprovalRequest, user) -> str:
    """Empty when ``user`` may decide ``request``; otherwise the reason they may not."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return "sign in to decide approval requests"
    needed = (
        ["approvals.approve_tier3"] if request.tier >= 3 else ["approvals.approve_tier2", "approvals.approve_tier3"]
    )
    if not any(user.has_perm(perm) for perm in needed):
        return f"deciding tier-{request.tier} requests needs the permission {needed[0]}"
    why = ineligibility(request, user)
    if why:
        return f"you {why}: someone else must decide it"
    return ""


# Who last changed what a plan depends on may not approve it, however long ago; whoever changed it (or any
# policy rule) within this window before the request, or while it is open, may not either.
EDITOR_WINDOW = timedelta(hours=24)


def ineligibility(request: ApprovalRequest, user) -> str:
    """Why ``user`` may not decide ``request`` (empty when nothing bars them)."""
    barred = request.ineligible.filter(user_id=user.pk).values_list("reason", flat=True).first()
    if barred:
        return barred
    if user.pk == request.requested_by_id:
        return "started this run"
    name = user.get_username()
    objects = [tuple(item) for item in request.depends_on or []]
    for object_type, object_id in objects:
        last = (
            AuditEvent.objects.filter(object_type=object_type, object_id=object_id)
            .exclude(actor__startswith="system")
            .exclude(action__startswith="approval.")
            .order_by("-at")
            .values_list("actor", flat=True)
            .first()
        )
        if last == name:
            return f"made the last change to {object_type} #{object_id} that this plan depends on"
    since = request.created_at - EDITOR_WINDOW
    edits = AuditEvent.objects.filter(actor=name, at__gte=since).exclude(action__startswith="approval.")
    for object_type, object_id in objects:
        edit = edits.filter(object_type=object_type, object_id=object_id).order_by("-at").first()
        if edit is not None:
            return f"changed {object_type} #{object_id} ({edit.action}) while this plan was prepared or waiting"
    rule_edit = edits.filter(object_type=POLICY_RULE_OBJECT).order_by("-at").first()
    if rule_edit is not None:
        return f"changed policy rule #{rule_edit.object_id} ({rule_edit.action}) within a day of this request"
    return ""


def decide(request_id: int, *, user, approve: bool, reason: str) -> ApprovalRequest:
    """Record ``user``'s decision. The last needed approval, or any rejection, resumes the run on commit.

    Raises ``NotAllowed`` (403), ``Conflict`` (409), ``ValidationError`` naming "reason",
    or ``ApprovalRequest.DoesNotExist``.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required."})
    expired = False
    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
        refusal = may_decide(request, user)
        if refusal:
            raise NotAllowed(refusal)
        if request.status != RequestStatus.PENDING:
            raise Conflict(f"request #{request.pk} is {request.status}, no longer pending")
        if request.expires_at <= timezone.now():
            expired = True
        else:
            _record_decision(request, user=user, approve=approve, reason=reason)
    if expired:
        expire_request(request.pk)
        raise Conflict(f"request #{request.pk} expired at {request.expires_at:%Y-%m-%d %H:%M:%S %Z}")
    request.refresh_from_db()
    return request


def _record_decision(request: ApprovalRequest, *, user, approve: bool, reason: str) -> None:
    try:
        with transaction.atomic():
            ApprovalDecision.objects.create(request=request, user=user, approve=approve, reason=reason)
    except IntegrityError:
        raise Conflict(f"you already decided request #{request.pk}") from None
    approvals = request.decisions.filter(approve=True).count()
    audit.record(
        "approval.decision",
        actor=user,
        obj=request,
        data={
            "run_id": request.run_id,
            "plan_hash": request.plan_hash,
            "approve": approve,
            "reason": reason,
            "approvals": approvals,
            "required_approvals": request.required_approvals,
        },
    )
    name = user.get_username()
    if not approve:
        _finish(request, RequestStatus.REJECTED, f"rejected by {name}: {reason}", actor=user)
    elif approvals >= request.required_approvals:
        _finish(request, RequestStatus.APPROVED, f"approved by {_approvers(request)}", actor=user)


def _approvers(request: ApprovalRequest) -> str:
    names = request.decisions.filter(approve=True).order_by("at", "pk").values_list("user__username", flat=True)
    return ", ".join(names)


def _finish(request: ApprovalRequest, status: str, reason: str, *, actor) -> None:
    now = timezone.now()
    claimed = ApprovalRequest.objects.filter(pk=request.pk, status=RequestStatus.PENDING).update(
        status=status, status_reason=reason[:500], decided_at=now
    )
    if not claimed:
        raise Conflict(f"request #{request.pk} is no longer pending")
    audit.record(
        f"approval.{status}", actor=actor, obj=request, data={"run_id": request.run_id, "reason": reason[:500]}
    )
    _resume_on_commit(request.run_id)
    event = NotificationEvent.APPROVED if status == RequestStatus.APPROVED else NotificationEvent.REJECTED
    notify(
        event,
        run_id=request.run_id,
        summary=f"Run #{request.run_id} {status}: {reason[:200]}",
        context={"approval_request": request.pk},
    )


def void_pending(run_id: int, *, reason: str) -> int:
    """Void the run's pending requests (plan changed, run cancelled). Returns how many."""
    count = 0
    with transaction.atomic():
        for pk in ApprovalRequest.objects.filter(run_id=run_id, status=RequestStatus.PENDING).values_list(
            "pk", flat=True
        ):
            claimed = ApprovalRequest.objects.filter(pk=pk, status=RequestStatus.PENDING).update(
                status=RequestStatus.VOID, status_reason=reason[:500], decided_at=timezone.now()
            )
            if claimed:
                audit.record(
                    "approval.voided", obj=("approvals.approvalrequest", pk), data={"run_id": run_id, "reason": reason}
                )
                count += 1
    return count


def expire_request(request_id: int, *, now: datetime | None = None) -> bool:
    """Expire one overdue pending request; the run is resumed so the pipeline escalates it."""
    now = now or timezone.now()
    with transaction.atomic():
        request = ApprovalRequest.objects.filter(pk=request_id).first()
        if request is None:
            return False
        claimed = ApprovalRequest.objects.filter(
            pk=request_id, status=RequestStatus.PENDING, expires_at__lte=now
        ).update(status=RequestStatus.EXPIRED, status_reason="no decision in time: escalated", decided_at=now)
        if not claimed:
            return False
        audit.record(
            "approval.expired",
            actor="system:approvals",
            obj=request,
            data={"run_id": request.run_id, "expires_at": request.expires_at},
        )
        _resume_on_commit(request.run_id)
        notify(
            NotificationEvent.EXPIRED,
            run_id=request.run_id,
            summary=f"Run #{request.run_id}: approval request #{request.pk} expired without a decision",
            context={**request.context, "approval_request": request.pk},
        )
    return True


def expire_due(now: datetime | None = None) -> int:
    """Expire every overdue pending request (the beat task). Returns how many."""
    now = now or timezone.now()
    due = ApprovalRequest.objects.filter(status=RequestStatus.PENDING, expires_at__lte=now)
    return sum(expire_request(pk, now=now) for pk in due.values_list("pk", flat=True)[:1000])


REDRIVE_AFTER = timedelta(seconds=60)
REDRIVE_WITHIN = timedelta(hours=24)


def decided_runs(now: datetime | None = None) -> list[int]:
    """Runs whose request was decided (or expired) more than a minute and less than a day ago and that have no
    pending request: the pipeline re-sends their resume when they still wait (a hand-off lost with the broker).
    """
    now = now or timezone.now()
    pending = ApprovalRequest.objects.filter(status=RequestStatus.PENDING).values("run_id")
    decided = ApprovalRequest.objects.filter(
        status__in=(RequestStatus.APPROVED, RequestStatus.REJECTED, RequestStatus.EXPIRED),
        decided_at__lte=now - REDRIVE_AFTER,
        decided_at__gte=now - REDRIVE_WITHIN,
    ).exclude(run_id__in=pending)
    return sorted(set(decided.values_list("run_id", flat=True)))
