"""The heal pipeline's decisions: start, plan, gate, resume, outcome, cancel, reap.

Every function takes ids, re-reads the run, and returns quietly when the run
is no longer in the state it acts on, so a redelivered task changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from approvals import audit
from approvals import policy as governance
from approvals import services as approvals
from approvals.context import ApprovalContext
from incidents import channels, inventory
from incidents import services as intake
from incidents.choices import UNKNOWN_DIAGNOSIS, IncidentStatus
from incidents.models import Incident
from learning import services as learning
from remediation import evidence, execution, planner, state
from remediation.choices import RunStatus
from remediation.models import HealRun, Playbook, RunEvent
from remediation.services import transition

logger = logging.getLogger(__name__)
S = RunStatus
EXECUTED = (S.SUCCEEDED, S.ROLLED_BACK, S.FAILED)


def start_run(incident_id: int, *, dry_run: bool = False, started_by=None, manual: bool = False) -> HealRun | None:
    """Create the run for an incident (idempotent: an incident has at most one live run)."""
    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None:
        return None
    # One read for both questions: is a run live (at most one is), and has there been one?
    earlier = list(HealRun.objects.filter(incident_id=incident_id).values_list("pk", "status"))
    live = next((pk for pk, status in earlier if status not in S.TERMINAL), None)
    if live is not None:
        return HealRun.objects.filter(pk=live).first()
    allowed = IncidentStatus.ACTIVE if manual else (IncidentStatus.OPEN,)
    if incident.status not in allowed:
        return None
    if not manual and earlier:
        return None  # an automatic start happens once per incident; more are started by hand
    try:
        with transaction.atomic():
            run = HealRun.objects.create(
                incident=incident,
                diagnosis_code=incident.diagnosis_code,
                dry_run=dry_run,
                started_by=started_by,
                status=S.RECEIVED,
            )
            RunEvent.objects.create(
                run=run, to_status=S.RECEIVED, note="run created" + (" (dry run)" if dry_run else "")
            )
            intake.attach_run(incident.pk, run.pk)
            audit.record(
                "run.created",
                actor=started_by,
                obj=run,
                data={"incident": incident.pk, "dry_run": dry_run, "manual": manual},
            )
            if not dry_run:
                intake.set_status(
                    incident.pk, IncidentStatus.HEALING, reason=f"heal run #{run.pk} started", expected=allowed
                )
            transition(
                run.pk,
                S.RECEIVED,
                S.DIAGNOSED,
                note=f"diagnosis {incident.diagnosis_code} (confidence {incident.diagnosis_confidence:.2f})",
                data={"evidence": incident.diagnosis_evidence},
            )
    except IntegrityError:
        return HealRun.objects.filter(incident_id=incident_id).exclude(status__in=S.TERMINAL).first()
    return run


def _escalate(run: HealRun, expected: str, reason: str) -> None:
    transition(run.pk, expected, S.ESCALATED, reason=reason)


def _choose(code: str, candidates: dict[str, Playbook], incident: Incident):
    """The playbook to plan with: the best ranked one that acts and fits the service's inventory; else the best
    ranked escalate-only one (it gathers evidence for humans). Returns (playbook, ranking entry, why not)."""
    service = inventory.service_named(incident.service)
    acting = {name: p for name, p in candidates.items() if not p.escalate_only}
    misfits = {name: planner.missing_resources(p, service) for name, p in acting.items()} if service else {}
    fitting = sorted(name for name in acting if service is not None and not misfits[name])
    pool = fitting or sorted(name for name, p in candidates.items() if p.escalate_only)
    if pool:
        ranking = learning.recommend(code, pool)
        return candidates[ranking[0].playbook], ranking, None
    if service is None:
        return (
            None,
            None,
            (
                f"service {incident.service or '(none)'!r} is not in the inventory: GRACE acts only on inventory "
                "resources (add the service and its resources, e.g. with manage.py grace_inventory apply)",
                {"missing_service": incident.service},
            ),
        )
    needs = "; ".join(f"{name} needs a {' and a '.join(kinds)} resource" for name, kinds in sorted(misfits.items()))
    missing = [
        {"service": service.name, "kind": kind, "playbook": name}
        for name, kinds in sorted(misfits.items())
        for kind in kinds
    ]
    return (
        None,
        None,
        (
            f"no playbook for {code} fits service {service.name} in the inventory ({needs}): add the resource to the "
            "inventory, or a playbook that acts on what the service has",
            {"missing_resources": missing},
        ),
    )


def _hand_over(run: HealRun, playbook: Playbook, code: str) -> None:
    """An escalate-only playbook: gather its evidence for the people who take over, and escalate with it."""
    found = evidence.gather(playbook.steps, run.incident)
    reason = f"playbook {playbook.name} hands {code} to humans"
    if found:
        reason += f"; evidence: {evidence.summary(found)}"
    transition(
        run.pk,
        S.DIAGNOSED,
        S.ESCALATED,
        reason=reason,
        data={"evidence": found} if found else None,
        result=state.Planned(plan={}, plan_hash="", family="", target="", playbook=playbook, shadow=False),
    )


def plan(run_id: int) -> None:
    run = HealRun.objects.select_related("incident__channel").filter(pk=run_id, status=S.DIAGNOSED).first()
    if run is None:
        return
    incident = run.incident
    code = incident.diagnosis_code
    if code == UNKNOWN_DIAGNOSIS:
        return _escalate(run, S.DIAGNOSED, "diagnosis unknown: handed to humans, never acted on")
    candidates = {p.name: p for p in Playbook.objects.filter(enabled=True) if code in (p.diagnosis_codes or [])}
    if not candidates:
        return _escalate(run, S.DIAGNOSED, f"no enabled playbook remedies {code}")
    if not channels.may_raise(incident.channel, incident.service):
        why = f"channel {incident.channel.name} may not raise incidents for service {incident.service!r}"
        return _escalate(run, S.DIAGNOSED, why)
    playbook, ranking, refusal = _choose(code, candidates, incident)
    if playbook is None:
        reason, data = refusal
        return transition(run.pk, S.DIAGNOSED, S.ESCALATED, reason=reason, data=data)
    if playbook.escalate_only:
        return _hand_over(run, playbook, code)
    chosen = ranking[0]
    try:
        built = planner.build(playbook, incident)
    except planner.PlanError as exc:
        return _escalate(run, S.DIAGNOSED, f"cannot plan {playbook.name}: {exc}")
    cooldown_from = timezone.now() - timedelta(seconds=playbook.cooldown_seconds)
    recent = (
        HealRun.objects.filter(
            playbook=playbook, target=built.target, status__in=EXECUTED, finished_at__gte=cooldown_from
        )
        .exclude(pk=run.pk)
        .order_by("-finished_at")
        .first()
    )
    if recent is not None and not run.dry_run:
        return transition(
            run.pk,
            S.DIAGNOSED,
            S.BLOCKED,
            reason=f"cooldown: run #{recent.pk} of {playbook.name} on {built.target} ended at "
            f"{recent.finished_at:%H:%M:%S}; the playbook waits {playbook.cooldown_seconds} s between runs",
        )
    transition(
        run.pk,
        S.DIAGNOSED,
        S.PLANNED,
        note=f"playbook {playbook.name} chosen (score {chosen.score:.2f}, "
        + ("exploring: too few outcomes yet)" if chosen.exploring else f"confidence {chosen.confidence:.2f})"),
        data={"ranking": [r.__dict__ for r in ranking], "plan_hash": built.hash},
        result=state.Planned(
            plan=built.to_document(),
            plan_hash=built.hash,
            family=built.family,
            target=built.target,
            host=built.host,
            playbook=playbook,
            shadow=playbook.shadow,
            # No learned confidence while the playbook is still under-tried: its declared tier stands
            # until outcomes say otherwise (then low confidence raises it through governance).
            confidence=None if chosen.exploring else chosen.confidence,
        ),
    )


def _facts(run: HealRun) -> governance.PlanFacts:
    plan = planner.Plan.from_document(run.plan)
    since = timezone.now() - timedelta(hours=24)
    recent_failures = (
        HealRun.objects.filter(target=run.target, status__in=(S.FAILED, S.ROLLED_BACK), finished_at__gte=since)
        .exclude(pk=run.pk)
        .count()
    )
    return governance.PlanFacts(
        actions=[s.action for s in plan.steps],
        families=sorted({s.family for s in plan.steps}),
        # The inventory's environment of the service (in the plan, so the approval covers it), never the alert's.
        environment=plan.environment,
        service=plan.service,
        diagnosis_code=run.diagnosis_code,
        target=run.target,
        declared_tier=run.playbook.tier if run.playbook else 1,
        confidence=run.confidence,
        confidence_threshold=learning.CONFIDENCE_TIER_THRESHOLD,
        recent_failures=recent_failures,
        blast_radius=len(plan.targets),
    )


def gate(run_id: int) -> None:
    run = HealRun.objects.select_related("incident__channel", "playbook").filter(pk=run_id, status=S.PLANNED).first()
    if run is None:
        return
    facts = _facts(run)
    decision = governance.evaluate(facts)
    plan = planner.Plan.from_document(run.plan)
    reasons = list(decision.reasons)
    tier = decision.tier
    if plan.action_tier > tier:
        reasons.append(f"tier {tier} -> {plan.action_tier}: an action of the plan declares tier {plan.action_tier}")
        tier = plan.action_tier
    if plan.tier_floor > tier:
        reasons.append(f"tier {tier} -> {plan.tier_floor}: the inventory's tier floor of service {plan.service}")
        tier = plan.tier_floor
    gated = state.Gated(tier=tier, tier_reasons=reasons, policy_explanation=decision.explanation)
    if not decision.allowed:
        return transition(run.pk, S.PLANNED, S.BLOCKED, reason=f"policy: {decision.blocked_reason}", result=gated)
    shadow = run.shadow or governance.shadow_mode()
    if run.dry_run or shadow:
        mode = "dry run" if run.dry_run else "shadow mode"
        needs = "runs autonomously" if tier == 1 else f"needs {tier - 1} approval(s)"
        return transition(
            run.pk,
            S.PLANNED,
            S.SIMULATED,
            result=dataclasses.replace(gated, shadow=shadow),
            reason=f"{mode}: planned and gated at tier {tier} ({needs}); nothing executed",
        )
    if tier == 1:
        ok, why = governance.consume_action_budget(facts, spender=f"run-{run.pk}")
        if not ok:
            return transition(run.pk, S.PLANNED, S.BLOCKED, reason=f"policy: {why}", result=gated)
        return transition(
            run.pk,
            S.PLANNED,
            S.APPROVED,
            note="tier 1: runs autonomously",
            result=gated,
            family=run.family,
            host=run.host,
        )
    with transaction.atomic():
        if transition(
            run.pk,
            S.PLANNED,
            S.AWAITING_APPROVAL,
            advance=False,
            result=gated,
            note=f"tier {tier}: waiting for {tier - 1} approval(s)",
        ):
            approvals.open_request(
                run_id=run.pk,
                plan_hash=run.plan_hash,
                tier=tier,
                requested_by_id=run.started_by_id,
                context=approval_context(run, reasons, decision.explanation),
                ineligible=initiators(run),
                depends_on=[_audit_ref(run), _audit_ref(run.playbook)],
            )


def _audit_ref(obj) -> tuple[str, str]:
    return obj._meta.label_lower, str(obj.pk)


def initiators(run: HealRun) -> list[tuple[int | None, str]]:
    """Who set this run going, and so may not approve it: the user who raised the incident, the owner of
    the channel it came through, and the user who started the run by hand."""
    incident = run.incident
    return [
        (incident.raised_by_id, f"raised incident #{incident.pk}"),
        (incident.channel.owner_id, f"own the channel {incident.channel.name} that raised incident #{incident.pk}"),
        (run.started_by_id, "started this run"),
    ]


def approval_context(run: HealRun, reasons: list[str], explanation: list[dict]) -> ApprovalContext:
    """What an approver sees: the incident, the exact plan, its contract and the reasons for the tier."""
    plan = planner.Plan.from_document(run.plan)
    return ApprovalContext(
        service=plan.service,
        environment=plan.environment,
        incident=run.incident_id,
        title=run.incident.title,
        diagnosis=run.diagnosis_code,
        playbook=run.playbook.name if run.playbook else "",
        plan=run.plan,
        contract=[step.contract for step in plan.steps],
        snapshot_policy=plan.snapshot_policy,
        confidence=run.confidence,
        tier_reasons=reasons,
        policy_explanation=explanation,
        shadow=run.shadow,
        links={
            "run": reverse("admin:remediation_healrun_change", args=[run.pk]),
            "incident": reverse("admin:incidents_incident_change", args=[run.incident_id]),
        },
    )


def replan_waiting(playbook: Playbook, *, actor=None) -> int:
    """A playbook changed: runs waiting for approval are planned again and go back through the gate, so
    policy judges the new plan (its tier, targets and family); approvals given for the old plan are void."""
    replanned = 0
    waiting = HealRun.objects.select_related("incident", "playbook").filter(
        playbook=playbook, status=S.AWAITING_APPROVAL
    )
    for run in waiting:
        try:
            built = planner.build(playbook, run.incident) if playbook.enabled else None
        except planner.PlanError as exc:
            built, why = None, f"playbook {playbook.name} changed and no longer plans: {exc}"
        else:
            why = f"playbook {playbook.name} was disabled while the run waited for approval"
        with transaction.atomic():
            if built is None:
                moved = transition(run.pk, S.AWAITING_APPROVAL, S.ESCALATED, actor=actor, reason=why)
            elif built.hash == run.plan_hash:
                continue
            else:
                moved = transition(
                    run.pk,
                    S.AWAITING_APPROVAL,
                    S.PLANNED,
                    actor=actor,
                    note=f"playbook {playbook.name} changed: planned again, to be gated again",
                    data={"old_plan_hash": run.plan_hash, "new_plan_hash": built.hash},
                    result=state.Planned(
                        plan=built.to_document(),
                        plan_hash=built.hash,
                        family=built.family,
                        target=built.target,
                        host=built.host,
                    ),
                    guard={"plan_hash": run.plan_hash},
                )
                replanned += moved
            if moved:
                approvals.void_pending(run.pk, reason=f"the plan changed: {why if built is None else 'new plan'}")
    return replanned


def resume(run_id: int) -> None:
    """After a decision on the run's approval request (or its expiry)."""
    run = HealRun.objects.select_related("incident").filter(pk=run_id, status=S.AWAITING_APPROVAL).first()
    if run is None:
        return
    if not execution.plan_intact(run):
        approvals.void_pending(run.pk, reason="the plan changed after approval was requested")
        transition(run.pk, S.AWAITING_APPROVAL, S.BLOCKED, reason="the plan changed after approval was requested")
        return
    verdict = approvals.approval_state(run.pk, run.plan_hash)
    if verdict == "approved":
        ok, why = governance.consume_action_budget(_facts(run), spender=f"run-{run.pk}")
        if not ok:
            transition(run.pk, S.AWAITING_APPROVAL, S.BLOCKED, reason=f"policy: {why}")
            return
        transition(run.pk, S.AWAITING_APPROVAL, S.APPROVED, note="approved", family=run.family, host=run.host)
    elif verdict == "rejected":
        transition(run.pk, S.AWAITING_APPROVAL, S.REJECTED, reason="an approver rejected the plan")
    elif verdict == "expired":
        transition(run.pk, S.AWAITING_APPROVAL, S.EXPIRED, reason="the approval request expired; escalated to humans")
