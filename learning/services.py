"""Outcomes, playbook statistics, confidence and recommendations.

The pipeline calls :func:`record_outcome` once per finished run, asks
:func:`recommend` to rank the enabled playbooks of a diagnosis, and reads
:func:`confidence` and :func:`consecutive_failures` for earned autonomy: a
confidence under ``CONFIDENCE_TIER_THRESHOLD`` raises the tier, and
``PAUSE_AFTER_FAILURES`` consecutive failures pause the playbook. See
``learning.estimators`` for the estimators and docs/learning.md for the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce, Greatest, Least

from approvals import audit
from incidents.models import Incident
from learning.choices import Outcome
from learning.estimators import beta_mean, wilson_lower, wilson_upper
from learning.models import OutcomeRecord, PlaybookStatistics

CONFIDENCE_TIER_THRESHOLD: float = settings.GRACE_CONFIDENCE_TIER_THRESHOLD
PAUSE_AFTER_FAILURES: int = settings.GRACE_PAUSE_AFTER_FAILURES
MIN_ATTEMPTS_FOR_CONFIDENCE: int = settings.GRACE_MIN_ATTEMPTS_FOR_CONFIDENCE


@dataclass(frozen=True)
class Recommendation:
    playbook: str  # Playbook.name
    score: float  # ranking: Beta(1,1) posterior mean, or the Wilson upper bound while exploring
    confidence: float  # governance: Wilson 95 % lower bound (0 while under MIN_ATTEMPTS_FOR_CONFIDENCE)
    attempts: int
    successes: int
    exploring: bool  # ranked optimistically because it has fewer than MIN_ATTEMPTS_FOR_CONFIDENCE attempts
    evidence: dict = field(default_factory=dict)


def _validate(outcome: str, started_at: datetime, finished_at: datetime, stage_durations: dict) -> None:
    errors = {}
    if outcome not in Outcome.values:
        errors["outcome"] = f"must be one of {', '.join(Outcome.values)}, got {outcome!r}"
    if finished_at < started_at:
        errors["finished_at"] = "must not be before started_at"
    if not isinstance(stage_durations, dict) or not all(
        isinstance(v, int | float) and v >= 0 for v in stage_durations.values()
    ):
        errors["stage_durations"] = "must map stage names to non-negative seconds"
    if errors:
        raise ValidationError(errors)


def record_outcome(
    *,
    run_id: int,
    incident_id: int,
    diagnosis_code: str,
    playbook: str,
    service: str,
    target: str,
    tier: int,
    outcome: str,
    stage_durations: dict[str, float],
    contract_results: list[dict],
    started_at: datetime,
    finished_at: datetime,
    shadow: bool = False,
) -> OutcomeRecord:
    """Record how a run ended, once: a redelivered call returns the first record and changes nothing.

    Succeeded, failed and rolled-back outcomes of non-shadow runs with a playbook
    update the (diagnosis, playbook) statistics in the same transaction.
    """
    _validate(outcome, started_at, finished_at, stage_durations)
    counted = outcome in Outcome.COUNTED and bool(playbook) and not shadow
    duration = (finished_at - started_at).total_seconds()
    first_seen = Incident.objects.filter(pk=incident_id).values_list("first_seen", flat=True).first()
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = OutcomeRecord.objects.create(
                    run_id=run_id,
                    incident_id=incident_id,
                    diagnosis_code=diagnosis_code,
                    playbook=playbook,
                    service=service,
                    target=target,
                    tier=tier,
                    outcome=outcome,
                    shadow=shadow,
                    counted=counted,
                    stage_durations=stage_durations,
                    contract_results=contract_results,
                    started_at=started_at,
                    finished_at=finished_at,
                    duration_seconds=duration,
                    resolve_seconds=(finished_at - first_seen).total_seconds() if first_seen else None,
                )
        except IntegrityError:
            existing = OutcomeRecord.objects.filter(run_id=run_id).first()
            if existing is None:
                raise
            return existing
        if counted:
            _apply(diagnosis_code, playbook, outcome, duration, finished_at)
        audit.record(
            "learning.outcome_recorded",
            obj=record,
            data={
                "run_id": run_id,
                "diagnosis": diagnosis_code,
                "playbook": playbook,
                "outcome": outcome,
                "counted": counted,
                "duration_seconds": round(duration, 3),
            },
        )
    return record


def _apply(diagnosis_code: str, playbook: str, outcome: str, duration: float, finished_at: datetime) -> None:
    """Add one counted outcome to the statistics with a single UPDATE of F expressions (race-safe)."""
    PlaybookStatistics.objects.get_or_create(diagnosis_code=diagnosis_code, playbook=playbook)
    success = outcome == Outcome.SUCCEEDED
    newer = Q(last_outcome_at__isnull=True) | Q(last_outcome_at__lte=finished_at)
    updated = PlaybookStatistics.objects.filter(diagnosis_code=diagnosis_code, playbook=playbook).update(
        attempts=F("attempts") + 1,
        successes=F("successes") + int(success),
        failures=F("failures") + int(outcome == Outcome.FAILED),
        rollbacks=F("rollbacks") + int(outcome == Outcome.ROLLED_BACK),
        consecutive_failures=Value(0) if success else F("consecutive_failures") + 1,
        duration_count=F("duration_count") + 1,
        duration_sum=F("duration_sum") + duration,
        duration_sum_sq=F("duration_sum_sq") + duration * duration,
        duration_min=Least(Coalesce(F("duration_min"), Value(duration)), Value(duration)),
        duration_max=Greatest(Coalesce(F("duration_max"), Value(duration)), Value(duration)),
        last_outcome=Case(When(newer, then=Value(outcome)), default=F("last_outcome")),
        last_outcome_at=Case(When(newer, then=Value(finished_at)), default=F("last_outcome_at")),
    )
    assert updated == 1, "the statistics row was created just above"


def revise_outcome(run_id: int, outcome: str, *, reason: str, actor=None) -> OutcomeRecord | None:
    """A run's outcome changed after it was recorded (an operator rolled a SUCCEEDED run back): the record and
    the playbook's statistics now say so. Idempotent: a second call with the same outcome changes nothing."""
    if outcome not in Outcome.values:
        raise ValidationError({"outcome": f"must be one of {', '.join(Outcome.values)}, got {outcome!r}"})
    with transaction.atomic():
        record = OutcomeRecord.objects.select_for_update().filter(run_id=run_id).first()
        if record is None or record.outcome == outcome:
            return record
        before = record.outcome
        counted = outcome in Outcome.COUNTED and bool(record.playbook) and not record.shadow
        if record.counted and counted:
            _move(record.diagnosis_code, record.playbook, before, outcome)
        OutcomeRecord.objects.filter(pk=record.pk).update(outcome=outcome, counted=record.counted and counted)
        audit.record(
            "learning.outcome_revised",
            actor=actor,
            obj=record,
            data={"run_id": run_id, "outcome": {"before": before, "after": outcome}, "reason": reason},
        )
        record.refresh_from_db()
    return record


def _move(diagnosis_code: str, playbook: str, before: str, after: str) -> None:
    """Move one counted outcome from ``before`` to ``after`` in the statistics (F expressions, race-safe)."""

    def delta(outcome: str) -> dict:
        return {
            "successes": int(outcome == Outcome.SUCCEEDED),
            "failures": int(outcome == Outcome.FAILED),
            "rollbacks": int(outcome == Outcome.ROLLED_BACK),
        }

    old, new = delta(before), delta(after)
    changes = {name: F(name) - old[name] + new[name] for name in old}
    if after in Outcome.FAILURES:
        changes["consecutive_failures"] = F("consecutive_failures") + 1
    PlaybookStatistics.objects.filter(diagnosis_code=diagnosis_code, playbook=playbook).update(**changes)


def rebuild_statistics(*, actor=None) -> int:
    """Recompute every PlaybookStatistics row from the outcome records; returns the number of rows."""
    with transaction.atomic():
        PlaybookStatistics.objects.all().delete()
        rows = OutcomeRecord.objects.filter(counted=True).order_by("finished_at", "pk")
        for diagnosis_code, playbook, outcome, duration, finished_at in rows.values_list(
            "diagnosis_code", "playbook", "outcome", "duration_seconds", "finished_at"
        ).iterator(chunk_size=2000):
            _apply(diagnosis_code, playbook, outcome, duration, finished_at)
        count = PlaybookStatistics.objects.count()
        audit.record("learning.statistics_rebuilt", actor=actor, data={"rows": count, "outcomes": rows.count()})
    return count


def confidence_from(successes: int, attempts: int) -> float:
    if attempts < MIN_ATTEMPTS_FOR_CONFIDENCE:
        return 0.0
    return wilson_lower(successes, attempts)


def confidence(diagnosis_code: str, playbook: str) -> float:
    """Wilson 95 % lower bound of the success rate; 0.0 with fewer than MIN_ATTEMPTS_FOR_CONFIDENCE attempts."""
    row = (
        PlaybookStatistics.objects.filter(diagnosis_code=diagnosis_code, playbook=playbook)
        .values_list("successes", "attempts")
        .first()
    )
    return confidence_from(*row) if row else 0.0


def consecutive_failures(diagnosis_code: str, playbook: str) -> int:
    """Failed or rolled-back outcomes since the last success (the pipeline pauses at PAUSE_AFTER_FAILURES)."""
    value = (
        PlaybookStatistics.objects.filter(diagnosis_code=diagnosis_code, playbook=playbook)
        .values_list("consecutive_failures", flat=True)
        .first()
    )
    return value or 0


def reset_streak(playbook: str, *, actor=None, reason: str = "") -> int:
    """Clear the playbook's consecutive failures (it was re-enabled after a pause): it starts afresh."""
    with transaction.atomic():
        reset = PlaybookStatistics.objects.filter(playbook=playbook, consecutive_failures__gt=0).update(
            consecutive_failures=0
        )
        if reset:
            audit.record(
                "learning.streak_reset", actor=actor, obj=("learning.playbook", playbook), data={"reason": reason}
            )
    return reset


def evidence(stats: PlaybookStatistics | None) -> dict:
    if stats is None:
        return {"attempts": 0, "successes": 0, "failures": 0, "rollbacks": 0, "consecutive_failures": 0}
    mean, stddev = stats.duration_mean, stats.duration_stddev
    return {
        "attempts": stats.attempts,
        "successes": stats.successes,
        "failures": stats.failures,
        "rollbacks": stats.rollbacks,
        "consecutive_failures": stats.consecutive_failures,
        "success_rate": round(stats.successes / stats.attempts, 4) if stats.attempts else None,
        "posterior_mean": round(beta_mean(stats.successes, stats.attempts), 4),
        "wilson_lower": round(wilson_lower(stats.successes, stats.attempts), 4),
        "wilson_upper": round(wilson_upper(stats.successes, stats.attempts), 4),
        "duration_mean_seconds": round(mean, 3) if mean is not None else None,
        "duration_stddev_seconds": round(stddev, 3) if stddev is not None else None,
        "duration_min_seconds": stats.duration_min,
        "duration_max_seconds": stats.duration_max,
        "last_outcome": stats.last_outcome,
        "last_outcome_at": stats.last_outcome_at.isoformat() if stats.last_outcome_at else None,
    }


def _recommendation(name: str, stats: PlaybookStatistics | None) -> Recommendation:
    attempts = stats.attempts if stats else 0
    successes = stats.successes if stats else 0
    exploring = attempts < MIN_ATTEMPTS_FOR_CONFIDENCE
    score = wilson_upper(successes, attempts) if exploring else beta_mean(successes, attempts)
    facts = evidence(stats)
    facts["ranked_by"] = "wilson_upper (exploring)" if exploring else "posterior_mean"
    return Recommendation(
        playbook=name,
        score=round(score, 6),
        confidence=round(confidence_from(successes, attempts), 6),
        attempts=attempts,
        successes=successes,
        exploring=exploring,
        evidence=facts,
    )


# Where the enabled playbooks come from: remediation owns them and registers its catalogue when Django starts
# (learning never reads remediation's tables): ``{diagnosis code: [playbook names]}``.
_playbook_catalogue: Callable[[], dict[str, list[str]]] = dict


def register_playbook_catalogue(catalogue: Callable[[], dict[str, list[str]]]) -> None:
    global _playbook_catalogue
    _playbook_catalogue = catalogue


def candidates_for(diagnosis_code: str) -> list[str]:
    """Enabled playbooks that declare the diagnosis, as the playbooks' owner reports them."""
    return sorted(_playbook_catalogue().get(diagnosis_code, []))


def known_diagnoses() -> list[str]:
    """Diagnosis codes with evidence or with an enabled playbook, sorted."""
    codes = set(PlaybookStatistics.objects.values_list("diagnosis_code", flat=True).distinct())
    codes.update(_playbook_catalogue())
    return sorted(codes)


def recommend(diagnosis_code: str, candidates: Iterable[str]) -> list[Recommendation]:
    """Rank the candidate playbooks for a diagnosis, best first (ties: more evidence, then name)."""
    names = list(dict.fromkeys(candidates))
    rows = {s.playbook: s for s in PlaybookStatistics.objects.filter(diagnosis_code=diagnosis_code, playbook__in=names)}
    ranked = [_recommendation(name, rows.get(name)) for name in names]
    ranked.sort(key=lambda r: (-r.score, -r.attempts, r.playbook))
    return ranked
