"""What the run page shows, read from the run: its timeline with each stage's duration, the escalation's
evidence, and the next steps a person can take when the run stopped short (admin: remediation.admin_runs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalRequest
from incidents.models import Service
from remediation import lifecycle
from remediation.choices import RunStatus
from remediation.models import HealRun, RunEvent

S = RunStatus


@dataclass
class TimelineRow:
    event: RunEvent
    offset_ms: float
    seconds: float | None  # how long the run stayed in the status this row entered (None: a note, or final)
    fraction: float = 0.0  # of the longest stage, for the bar
    current: bool = False  # the status the run is in now (still running)


@dataclass
class NextStep:
    text: str
    url: str = ""
    link: str = ""
    op: str = ""  # a button on the page (retry, cancel, rollback, rerun)


@dataclass
class RunPage:
    run: HealRun
    timeline: list[TimelineRow]
    total_seconds: float
    evidence: list[dict] = field(default_factory=list)
    next_steps: list[NextStep] = field(default_factory=list)
    approvals: list[ApprovalRequest] = field(default_factory=list)
    ranking: list[dict] = field(default_factory=list)


def timeline(run: HealRun, events: list[RunEvent], now: datetime) -> tuple[list[TimelineRow], float]:
    if not events:
        return [], 0.0
    start = events[0].at
    transitions = [e for e in events if e.to_status]
    rows = []
    for event in events:
        seconds, current = None, False
        if event.to_status:
            later = [t for t in transitions if (t.at, t.pk) > (event.at, event.pk)]
            if later:
                seconds = (later[0].at - event.at).total_seconds()
            elif event.to_status not in S.TERMINAL:
                seconds, current = (now - event.at).total_seconds(), True
        rows.append(TimelineRow(event, (event.at - start).total_seconds() * 1000, seconds, current=current))
    longest = max((r.seconds for r in rows if r.seconds), default=0.0)
    for row in rows:
        row.fraction = (row.seconds / longest) if row.seconds and longest else 0.0
    end = run.finished_at or now
    return rows, max(0.0, (end - start).total_seconds())


def _admin(name: str, *args, query: dict | None = None) -> str:
    url = reverse(f"admin:{name}", args=args)
    return f"{url}?{urlencode(query)}" if query else url


def _escalated_steps(run: HealRun, reason: str, data: dict) -> list[NextStep]:
    steps = []
    code = run.diagnosis_code
    if data.get("missing_service") is not None or "is not in the inventory" in reason:
        name = data.get("missing_service") or run.incident.service
        steps.append(
            NextStep(
                f"Add service {name!r} and the resources GRACE may act on to the inventory "
                "(or `manage.py grace_inventory apply` a catalogue that lists it)",
                _admin("incidents_service_add", query={"name": name}),
                "add the service",
            )
        )
    for missing in data.get("missing_resources", []):
        service = Service.objects.filter(name=missing["service"]).only("pk").first()
        query = {"kind": missing["kind"], **({"service": service.pk} if service else {})}
        steps.append(
            NextStep(
                f"Add the {missing['kind']} resource of service {missing['service']} to the inventory "
                f"(playbook {missing['playbook']} needs it)",
                _admin("incidents_resource_add", query=query),
                "add the resource",
            )
        )
    if re.search(r"has no \w+ resource|names no \w+ resource|resources \(.*\); the alert must name one", reason):
        steps.append(
            NextStep(
                "Fix the inventory: add the resource, or name one with the alert's selection label",
                _admin("incidents_resource_changelist", query={"q": run.incident.service}),
                "the service's resources",
            )
        )
    if reason.startswith("no enabled playbook") or data.get("missing_resources"):
        steps.append(
            NextStep(
                f"Add or enable a playbook for {code}",
                _admin("remediation_playbook_changelist", query={"q": code}),
                "playbooks",
            )
        )
    if reason.startswith("cannot plan") and run.playbook_id:
        steps.append(
            NextStep(
                f"Edit playbook {run.playbook.name} so it plans for this incident",
                _admin("remediation_playbook_change", run.playbook_id),
                "edit the playbook",
            )
        )
    if reason.startswith("diagnosis unknown"):
        steps.append(
            NextStep(
                "Add a diagnosis rule that recognises this signal", _admin("incidents_diagnosisrule_add"), "add a rule"
            )
        )
    if reason.startswith("channel "):
        steps.append(
            NextStep(
                "Widen the channel's scope if it should speak for this service",
                _admin("incidents_channel_change", run.incident.channel_id),
                "the channel",
            )
        )
    if "hands" in reason and "to humans" in reason:
        steps.append(
            NextStep(
                "Read the evidence below and act by hand; resolve the incident once it is fixed",
                _admin("incidents_incident_change", run.incident_id),
                "the incident",
            )
        )
    return steps


def _blocked_steps(run: HealRun, reason: str) -> list[NextStep]:
    steps = []
    if reason.startswith("cooldown"):
        steps.append(NextStep("Wait for the playbook's cooldown, then start a new run", op="rerun"))
    elif reason.startswith("policy"):
        steps.append(
            NextStep(
                "A policy rule or the hourly budget stopped it: review the policy rules",
                _admin("approvals_policyrule_changelist"),
                "policy rules",
            )
        )
    if "breaker" in reason or "rate limit" in reason:
        steps.append(
            NextStep(
                "Reset the circuit breaker once the target is healthy (audited)",
                _admin("remediation_resilience"),
                "breakers and rate limits",
            )
        )
    if "refused" in reason or "outside" in reason:
        steps.append(
            NextStep(
                "The action refused the target the inventory gives: check the resource",
                _admin("incidents_resource_changelist", query={"q": run.incident.service}),
                "the service's resources",
            )
        )
    if "unavailable" in reason:
        steps.append(
            NextStep(
                "The family is not configured or not reachable: see /api/cloud/status/",
                "/api/cloud/status/",
                "cloud status",
            )
        )
    if reason.startswith("cannot observe") or "not verified" in reason:
        steps.append(
            NextStep(
                "GRACE cannot see what the contract needs: check the target by hand, and grant "
                "the privilege named above"
            )
        )
    steps.append(NextStep("Start a new run once the cause is fixed", op="rerun"))
    return steps


def next_steps(run: HealRun, approvals: list[ApprovalRequest], escalation: dict, now: datetime) -> list[NextStep]:
    """What a person can do about this run now."""
    reason = run.status_reason or ""
    pending = next((a for a in approvals if a.status == "pending"), None)
    if run.status == S.AWAITING_APPROVAL and pending is not None:
        return [
            NextStep(
                f"Approve or reject it: request #{pending.pk} needs {pending.required_approvals} approval(s), "
                f"expires {timezone.localtime(pending.expires_at):%H:%M %Z}",
                _admin("approvals_approvalrequest_change", pending.pk),
                f"review request #{pending.pk}",
            ),
            NextStep("Cancel it instead", op="cancel"),
        ]
    if run.status == S.ESCALATED:
        steps = _escalated_steps(run, reason, escalation)
        steps.append(NextStep("Start a new run once the cause is fixed", op="rerun"))
        return steps
    if run.status == S.BLOCKED:
        return _blocked_steps(run, reason)
    if run.status in (S.FAILED, S.ROLLED_BACK):
        steps = [
            NextStep(
                "Check the target by hand: the contract did not hold"
                + (" and it could not be restored" if run.status == S.FAILED else "; it was restored")
            )
        ]
        if run.playbook_id:
            steps.append(
                NextStep(
                    f"Edit playbook {run.playbook.name} if it cannot fix this",
                    _admin("remediation_playbook_change", run.playbook_id),
                    "edit the playbook",
                )
            )
        steps.append(NextStep("Start a new run", op="rerun"))
        return steps
    if run.status in (S.REJECTED, S.EXPIRED, S.CANCELLED):
        return [NextStep("Start a new run if the incident still needs one", op="rerun")]
    if run.status == S.SUCCEEDED:
        return [NextStep("Roll it back from its verified snapshots if the change must be undone", op="rollback")]
    steps = []
    if run.status in S.ACTIVE and (now - run.heartbeat_at).total_seconds() > lifecycle.stage_allowance(run):
        steps.append(NextStep(f"No progress in {run.status} for a while: send the stage again", op="retry"))
    if run.status in S.CANCELLABLE:
        steps.append(NextStep("Cancel it (it has not touched anything yet)", op="cancel"))
    return steps


def build(run: HealRun, *, now: datetime | None = None) -> RunPage:
    now = now or timezone.now()
    events = list(run.events.order_by("at", "pk"))
    rows, total = timeline(run, events, now)
    approvals = list(ApprovalRequest.objects.filter(run=run).order_by("-created_at"))
    final = next((e for e in reversed(events) if e.to_status == run.status), None)
    escalation = final.data if final is not None and isinstance(final.data, dict) else {}
    planned = next((e for e in reversed(events) if e.to_status == S.PLANNED), None)
    ranking = planned.data.get("ranking", []) if planned is not None and isinstance(planned.data, dict) else []
    return RunPage(
        run=run,
        timeline=rows,
        total_seconds=total,
        evidence=escalation.get("evidence", []) if isinstance(escalation.get("evidence"), list) else [],
        next_steps=next_steps(run, approvals, escalation, now),
        approvals=approvals,
        ranking=ranking if isinstance(ranking, list) else [],
    )
