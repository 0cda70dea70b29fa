"""Read-side numbers: statistics rows, MTTR, success rate over time, auto-resolved versus escalated."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Avg, Count, Max, Min, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from learning.choices import Outcome
from learning.models import OutcomeRecord, PlaybookStatistics

_SUCCESS = Q(outcome=Outcome.SUCCEEDED)


def statistics(*, diagnosis: str = "", playbook: str = "", service: str = "") -> QuerySet:
    """Statistics per (diagnosis, playbook): the maintained rows, or aggregated from outcomes for one service.

    Rows are model instances without ``service`` and dicts with it; both carry the same counting fields.
    """
    if not service:
        rows = PlaybookStatistics.objects.all()
        if diagnosis:
            rows = rows.filter(diagnosis_code=diagnosis)
        if playbook:
            rows = rows.filter(playbook=playbook)
        return rows.order_by("diagnosis_code", "playbook")
    rows = OutcomeRecord.objects.filter(counted=True, service=service)
    if diagnosis:
        rows = rows.filter(diagnosis_code=diagnosis)
    if playbook:
        rows = rows.filter(playbook=playbook)
    return (
        rows.values("diagnosis_code", "playbook")
        .annotate(
            attempts=Count("pk"),
            successes=Count("pk", filter=_SUCCESS),
            failures=Count("pk", filter=Q(outcome=Outcome.FAILED)),
            rollbacks=Count("pk", filter=Q(outcome=Outcome.ROLLED_BACK)),
            duration_mean=Avg("duration_seconds"),
            duration_min=Min("duration_seconds"),
            duration_max=Max("duration_seconds"),
            last_outcome_at=Max("finished_at"),
        )
        .order_by("diagnosis_code", "playbook")
    )


def _rate(successes: int, attempts: int) -> float | None:
    return round(successes / attempts, 4) if attempts else None


def _seconds(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _measures() -> dict:
    return {
        "runs": Count("pk"),
        "n_counted": Count("pk", filter=Q(counted=True)),
        "n_successes": Count("pk", filter=Q(counted=True) & _SUCCESS),
        "auto_resolved": Count("pk", filter=_SUCCESS & Q(shadow=False)),
        "escalated": Count("pk", filter=Q(outcome__in=Outcome.HUMAN)),
        "failed": Count("pk", filter=Q(outcome__in=Outcome.FAILURES, shadow=False)),
        "mttr": Avg("resolve_seconds", filter=_SUCCESS & Q(shadow=False)),
        "mean_run": Avg("duration_seconds", filter=Q(shadow=False)),
    }


def _summary(totals: dict) -> dict:
    return {
        "runs": totals["runs"],
        "auto_resolved": totals["auto_resolved"],
        "escalated": totals["escalated"],
        "failed": totals["failed"],
        "success_rate": _rate(totals["n_successes"], totals["n_counted"]),
        "mttr_seconds": _seconds(totals["mttr"]),
        "mean_run_seconds": _seconds(totals["mean_run"]),
    }


def analytics(*, days: int = 30, service: str = "", now: datetime | None = None) -> dict:
    """MTTR, success rate per day, auto-resolved versus escalated, overall and per service."""
    until = now or timezone.now()
    since = until - timedelta(days=days)
    rows = OutcomeRecord.objects.filter(finished_at__gte=since, finished_at__lte=until)
    if service:
        rows = rows.filter(service=service)
    by_outcome = dict(rows.values_list("outcome").annotate(n=Count("pk")).order_by())
    over_time = [
        {
            "date": row["day"].isoformat(),
            "attempts": row["attempts"],
            "successes": row["successes"],
            "success_rate": _rate(row["successes"], row["attempts"]),
        }
        for row in rows.filter(counted=True)
        .annotate(day=TruncDate("finished_at"))
        .values("day")
        .annotate(attempts=Count("pk"), successes=Count("pk", filter=_SUCCESS))
        .order_by("day")
    ]
    per_service = [
        {"service": row["service"], **_summary(row)}
        for row in rows.values("service").annotate(**_measures()).order_by("service")
    ]
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "service": service or None,
        **_summary(rows.aggregate(**_measures())),
        "by_outcome": {outcome: by_outcome.get(outcome, 0) for outcome in Outcome.values},
        "success_rate_over_time": over_time,
        "per_service": per_service,
    }


def success_series(diagnosis: str, playbook: str, *, days: int = 90) -> list[dict]:
    """Daily success rate of one playbook for one diagnosis (admin chart)."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        OutcomeRecord.objects.filter(counted=True, diagnosis_code=diagnosis, playbook=playbook, finished_at__gte=since)
        .annotate(day=TruncDate("finished_at"))
        .values("day")
        .annotate(attempts=Count("pk"), successes=Count("pk", filter=_SUCCESS))
        .order_by("day")
    )
    return [{"date": r["day"], "attempts": r["attempts"], "success_rate": r["successes"] / r["attempts"]} for r in rows]
