"""The operator's overview: what GRACE is doing now and what it did this week, in a handful of queries.

Read-side only. Remediation builds it because it is the one app that may read every other (incidents,
approvals, learning); each section is a bounded query on an indexed column, so the page costs the same with
ten runs or a hundred thousand (tests/remediation/test_overview.py counts the queries, bench/bench_overview.py
times it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.db.models import Avg, Count, Q
from django.utils import timezone

from approvals.choices import RequestStatus
from approvals.context import ApprovalContext
from approvals.models import ApprovalRequest
from incidents.choices import IncidentStatus, Source
from incidents.models import Incident, SweepTarget
from learning.choices import BenchmarkRunStatus, Outcome
from learning.models import BenchmarkRun, BenchmarkSuite, OutcomeRecord
from remediation import resilience
from remediation.choices import RunStatus
from remediation.models import HealRun

S = RunStatus
# The pipeline's stages in order, for "runs in flight by stage".
IN_FLIGHT = (
    S.RECEIVED,
    S.DIAGNOSED,
    S.PLANNED,
    S.AWAITING_APPROVAL,
    S.APPROVED,
    S.SNAPSHOTTED,
    S.EXECUTING,
    S.VERIFYING,
    S.ROLLING_BACK,
)
ACTIVE_INCIDENTS = (IncidentStatus.OPEN, IncidentStatus.HEALING, IncidentStatus.ESCALATED)
LIST_LIMIT = 10
WEEK = timedelta(days=7)


@dataclass
class Overview:
    now: datetime
    incident_counts: dict[str, int] = field(default_factory=dict)
    incidents: list = field(default_factory=list)
    escalated: list = field(default_factory=list)
    runs_by_stage: list[tuple[str, int]] = field(default_factory=list)
    runs_in_flight: list = field(default_factory=list)
    pending_count: int = 0
    pending: list[dict] = field(default_factory=list)
    breakers: list[dict] = field(default_factory=list)
    limits: list[dict] = field(default_factory=list)
    resilience_error: str = ""
    sweeps: list = field(default_factory=list)
    benchmarks: list[dict] = field(default_factory=list)
    week: dict = field(default_factory=dict)

    @property
    def week_since(self) -> str:
        return (self.now - WEEK).date().isoformat()

    @property
    def runs_in_flight_total(self) -> int:
        return sum(n for _, n in self.runs_by_stage)


def _incidents(view: Overview) -> None:
    counts = dict(
        Incident.objects.filter(status__in=ACTIVE_INCIDENTS).values_list("status").annotate(n=Count("pk")).order_by()
    )
    view.incident_counts = {status: counts.get(status, 0) for status in ACTIVE_INCIDENTS}
    fields = (
        "pk",
        "title",
        "service",
        "environment",
        "status",
        "status_reason",
        "diagnosis_code",
        "severity",
        "occurrences",
        "last_seen",
        "latest_run_id",
    )
    active = Incident.objects.only(*fields).order_by("-last_seen")
    view.incidents = list(active.filter(status__in=(IncidentStatus.OPEN, IncidentStatus.HEALING))[:LIST_LIMIT])
    view.escalated = list(active.filter(status=IncidentStatus.ESCALATED)[:LIST_LIMIT])


def _runs(view: Overview) -> None:
    counts = dict(HealRun.objects.filter(status__in=IN_FLIGHT).values_list("status").annotate(n=Count("pk")).order_by())
    view.runs_by_stage = [(status, counts[status]) for status in IN_FLIGHT if counts.get(status)]
    view.runs_in_flight = list(
        HealRun.objects.filter(status__in=IN_FLIGHT)
        .select_related("incident", "playbook")
        .only(
            "pk",
            "status",
            "created_at",
            "heartbeat_at",
            "target",
            "tier",
            "diagnosis_code",
            "incident__service",
            "incident__title",
            "playbook__name",
        )
        .order_by("created_at")[:LIST_LIMIT]
    )


def _approvals(view: Overview) -> None:
    pending = ApprovalRequest.objects.filter(status=RequestStatus.PENDING)
    view.pending_count = pending.count()
    rows = (
        pending.order_by("created_at")
        .annotate(given=Count("decisions", filter=Q(decisions__approve=True)))
        .only("pk", "run_id", "tier", "required_approvals", "created_at", "expires_at", "context")[:LIST_LIMIT]
    )
    for request in rows:
        ctx = ApprovalContext.from_json(request.context)
        view.pending.append(
            {
                "request": request,
                "service": ctx.service,
                "diagnosis": ctx.diagnosis,
                "playbook": ctx.playbook,
                "given": request.given,
                "overdue": request.expires_at <= view.now,
            }
        )


def _resilience(view: Overview) -> None:
    try:
        view.breakers, view.limits = resilience.open_breakers(), resilience.spent_limits()
    except redis.RedisError as exc:
        view.resilience_error = f"breaker and rate-limit state is unavailable: Redis: {exc}"


def _sweeps(view: Overview) -> None:
    view.sweeps = list(
        SweepTarget.objects.filter(enabled=True)
        .only("pk", "name", "kind", "last_checked_at", "last_result")
        .order_by("kind", "name")[:LIST_LIMIT]
    )


def _benchmarks(view: Overview) -> None:
    open_regressions: dict[str, int] = {}
    regressed = Incident.objects.filter(source=Source.BENCHMARK, status__in=ACTIVE_INCIDENTS)
    for labels in regressed.values_list("labels", flat=True)[:500]:
        suite = (labels or {}).get("suite", "")
        open_regressions[suite] = open_regressions.get(suite, 0) + 1
    for suite in BenchmarkSuite.objects.filter(enabled=True).order_by("name").only("pk", "name"):
        latest = (
            BenchmarkRun.objects.filter(suite=suite, status__in=BenchmarkRunStatus.FINISHED)
            .order_by("-created_at", "-pk")
            .only("pk", "status", "finished_at", "duration_ms", "failed_checks", "regression_count")
            .first()
        )
        regressions = open_regressions.get(suite.name, 0)
        view.benchmarks.append({"suite": suite, "latest": latest, "open_regressions": regressions})


def _week(view: Overview) -> None:
    real = Q(shadow=False)
    totals = OutcomeRecord.objects.filter(finished_at__gte=view.now - WEEK).aggregate(
        runs=Count("pk", filter=real),
        auto_resolved=Count("pk", filter=real & Q(outcome=Outcome.SUCCEEDED)),
        escalated=Count("pk", filter=real & Q(outcome__in=Outcome.HUMAN)),
        rolled_back=Count("pk", filter=real & Q(outcome=Outcome.ROLLED_BACK)),
        failed=Count("pk", filter=real & Q(outcome=Outcome.FAILED)),
        cancelled=Count("pk", filter=real & Q(outcome=Outcome.CANCELLED)),
        simulated=Count("pk", filter=Q(shadow=True) | Q(outcome=Outcome.SIMULATED)),
        mttr=Avg("resolve_seconds", filter=real & Q(outcome=Outcome.SUCCEEDED)),
        mean_run=Avg("duration_seconds", filter=real),
    )
    decided = totals["auto_resolved"] + totals["escalated"] + totals["rolled_back"] + totals["failed"]
    totals["auto_share"] = totals["auto_resolved"] / decided if decided else None
    view.week = totals


def build(*, sections: set[str] | None = None, now: datetime | None = None) -> Overview:
    """The overview; ``sections`` limits it to what the viewer may see (None: everything)."""
    view = Overview(now=now or timezone.now())
    builders = {
        "incidents": _incidents,
        "runs": _runs,
        "approvals": _approvals,
        "resilience": _resilience,
        "sweeps": _sweeps,
        "benchmarks": _benchmarks,
        "week": _week,
    }
    for name, builder in builders.items():
        if sections is None or name in sections:
            builder(view)
    return view
