"""Benchmark runs: run a suite's checks, store the results, judge each metric against its baseline.

A metric is judged on its recent window: this run and the ``GRACE_BENCH_PERSIST_N - 1`` successful results
before it. The baseline is robust and taken from before that window: over the ``GRACE_BENCH_BASELINE_RUNS``
successful results of the same metric in the same suite that precede the window (at least
``GRACE_BENCH_MIN_SAMPLES`` of them, or no judgement is made), the median ``m`` and the scaled median absolute
deviation ``s``. With ``f = 1 + MIN_RELATIVE`` a latency is over its threshold above
``max(m + K x s, m x f, m + floor)``, a throughput below ``min(m - K x s, m / f, m - floor)``; the floor is the
metric's own smallest meaningful change (learning.checks, overridden by ``GRACE_BENCH_FLOORS``).

A value over its threshold is a regression only when at least ``GRACE_BENCH_PERSIST_K`` of the window's runs
are over it too (persistence): one slow run on a busy machine is noise. A regression opens an incident (source
``benchmark``, one fingerprint per suite and metric) through the intake service. A run a contract asked for is
judged on its own value (it answers "is it worse right after the change?") and opens no incident.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import redis
from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery, Window
from django.db.models.functions import RowNumber
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from approvals import audit
from incidents.choices import IncidentStatus, Source
from incidents.models import Incident
from learning.checks import KINDS, Measurement, Metric
from learning.choices import BenchmarkRunStatus, Trigger
from learning.defaults import SUITES
from learning.estimators import mad, median
from learning.models import BenchmarkResult, BenchmarkRun, BenchmarkSuite

logger = logging.getLogger(__name__)
ACTOR = "system:benchmarks"
EXECUTE_TASK = "learning.benchmark_execute"
ABANDONED_AFTER = 300  # seconds: the hard time limit of learning.benchmark_execute


@dataclass(frozen=True)
class Baseline:
    median: float
    mad: float
    samples: int
    threshold: float


@dataclass(frozen=True)
class Judgement:
    """How one value of a metric was judged: its baseline, whether it is over the threshold, and how many runs
    of the recent window (this one included) are over it."""

    baseline: Baseline | None
    over: bool
    recent_over: int
    window: int
    regression: bool

    def details(self) -> dict:
        return {
            "over_threshold": self.over,
            "recent_over": self.recent_over,
            "window": self.window,
            "needed": settings.GRACE_BENCH_PERSIST_K,
        }


def floor_of(metric: Metric) -> float:
    """The metric's smallest meaningful change: ``GRACE_BENCH_FLOORS`` when it names the metric, else its own."""
    return settings.GRACE_BENCH_FLOORS.get(metric.name, metric.floor)


def baseline_of(history: list[float], metric: Metric) -> Baseline | None:
    """The robust baseline of ``history`` (newest first), or None while there are too few samples."""
    if len(history) < settings.GRACE_BENCH_MIN_SAMPLES:
        return None
    centre = median(history)
    spread = mad(history, centre)
    k_spread = settings.GRACE_BENCH_MAD_K * spread
    factor = 1 + settings.GRACE_BENCH_MIN_RELATIVE
    floor = floor_of(metric)
    if metric.higher_is_better:
        threshold = min(centre - k_spread, centre / factor, centre - floor)
    else:
        threshold = max(centre + k_spread, centre * factor, centre + floor)
    return Baseline(centre, spread, len(history), threshold)


def over_threshold(value: float | None, baseline: Baseline | None, metric: Metric) -> bool:
    if baseline is None or value is None:
        return False
    return value < baseline.threshold if metric.higher_is_better else value > baseline.threshold


def history_depth() -> int:
    """How many earlier values a judgement reads: the rest of the recent window, then the baseline."""
    return settings.GRACE_BENCH_PERSIST_N - 1 + settings.GRACE_BENCH_BASELINE_RUNS


def judge(value: float, history: list[float], metric: Metric, *, persistent: bool = True) -> Judgement:
    """Judge ``value`` against ``history`` (the metric's earlier good values, newest first).

    The newest ``PERSIST_N - 1`` values form the recent window with ``value``; the baseline is the
    ``BASELINE_RUNS`` values before them. ``persistent=False`` (a contract's run) judges the value alone.
    """
    recent = history[: settings.GRACE_BENCH_PERSIST_N - 1]
    baseline = baseline_of(history[len(recent) :][: settings.GRACE_BENCH_BASELINE_RUNS], metric)
    over = over_threshold(value, baseline, metric)
    count = int(over) + sum(over_threshold(v, baseline, metric) for v in recent)
    regression = over and (count >= settings.GRACE_BENCH_PERSIST_K or not persistent)
    return Judgement(baseline, over, count, len(recent) + 1, regression)


def validate_checks(checks) -> None:
    if not isinstance(checks, list) or not checks:
        raise ValidationError({"checks": "must be a non-empty list of {'kind': ..., 'params': {...}}"})
    for index, check in enumerate(checks):
        if not isinstance(check, dict) or check.get("kind") not in KINDS:
            raise ValidationError({"checks": f"check {index}: kind must be one of {', '.join(sorted(KINDS))}"})
        if not isinstance(check.get("params", {}), dict):
            raise ValidationError({"checks": f"check {index}: params must be an object"})


def get_suite(name: str) -> BenchmarkSuite:
    """The enabled suite of that name; the shipped suites are created on first use."""
    suite = BenchmarkSuite.objects.filter(name=name).first()
    if suite is None and name in SUITES:
        suite, _ = BenchmarkSuite.objects.get_or_create(name=name, defaults=SUITES[name])
    if suite is None:
        raise BenchmarkSuite.DoesNotExist(f"no benchmark suite named {name!r}")
    if not suite.enabled:
        raise ValidationError({"suite": f"benchmark suite {name!r} is disabled"})
    return suite


def create_run(name: str, *, trigger: str = Trigger.API, actor=None, task_id: str = "") -> BenchmarkRun:
    """A queued run of the named suite."""
    suite = get_suite(name)
    with transaction.atomic():
        run = BenchmarkRun.objects.create(suite=suite, trigger=trigger, task_id=task_id)
        audit.record("benchmark.run_queued", actor=actor or ACTOR, obj=run, data={"suite": name, "trigger": trigger})
    return run


class HandoffFailed(Exception):
    """A run was created but could not be handed to a worker; it is marked failed with the reason."""


def dispatch(name: str, *, actor=None, trigger: str = Trigger.API) -> BenchmarkRun:
    """Queue a run and hand it to a worker (queue ``benchmarks``) once the run is committed.

    With the broker down the run is marked failed, with the reason in the audit log, and HandoffFailed
    is raised: no run stays queued with no message to run it.
    """
    task_id = str(uuid.uuid4())
    lost: list[Exception] = []

    def hand_off() -> None:
        # No result subscription: waiting reads the run's status (see wait), not the result store.
        try:
            current_app.send_task(EXECUTE_TASK, args=[run.pk], task_id=task_id, queue="benchmarks", ignore_result=True)
        except (BrokerError, redis.RedisError) as exc:
            _fail_unhanded(run.pk, exc, actor=actor)
            lost.append(exc)

    with transaction.atomic():
        run = create_run(name, trigger=trigger, actor=actor, task_id=task_id)
        transaction.on_commit(hand_off)
    if lost:
        raise HandoffFailed(
            f"benchmark run #{run.pk} could not be handed to a worker: Redis is unavailable ({lost[0]}); "
            "it is marked failed"
        ) from lost[0]
    return run


def _fail_unhanded(run_id: int, exc: Exception, *, actor=None) -> None:
    reason = f"could not be handed to a worker: {type(exc).__name__}: {exc}"
    with transaction.atomic():
        failed = BenchmarkRun.objects.filter(pk=run_id, status=BenchmarkRunStatus.QUEUED).update(
            status=BenchmarkRunStatus.FAILED, finished_at=timezone.now()
        )
        if failed:
            audit.record(
                "benchmark.run_failed",
                actor=actor or ACTOR,
                obj=("learning.benchmarkrun", run_id),
                data={"reason": reason},
            )
    logger.warning("benchmark run #%s %s", run_id, reason)


def wait(run: BenchmarkRun, timeout: float) -> BenchmarkRun:
    """Wait up to ``timeout`` seconds for a dispatched run to finish; returns it fresh either way.

    The run's own status is the answer, so waiting needs the database only, not Celery's result store.
    """
    deadline = time.monotonic() + timeout
    pause = 0.02
    run.refresh_from_db()
    while run.status not in BenchmarkRunStatus.FINISHED and time.monotonic() < deadline:
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.25)
        run.refresh_from_db()
    return run


def run_suite(name: str, *, trigger: str = "api") -> BenchmarkRun:
    """Run the suite now, in the caller: store results, detect regressions, open incidents for them.

    The run row, its results and its audit event are written together once the checks are done.
    """
    suite = get_suite(name)
    started_at = timezone.now()
    measured, duration_ms = _timed_measure(suite.checks)
    with transaction.atomic():
        run = BenchmarkRun.objects.create(
            suite=suite, trigger=trigger, status=BenchmarkRunStatus.RUNNING, started_at=started_at
        )
        results = _finish(run, measured, duration_ms)
    return _after(run, results)


def _measure(checks: list[dict]) -> list[tuple[Metric, str, Measurement | None, str]]:
    """(metric, kind, measurement or None, error) for every metric every check declares."""
    out = []
    for check in checks:
        kind_name = check.get("kind", "")
        params = check.get("params") or {}
        kind = KINDS.get(kind_name)
        if kind is None:
            out.append((Metric(f"{kind_name or 'unknown'}.check"), kind_name, None, "unknown check kind"))
            continue
        try:
            measurements = kind.run(params)
        except Exception as exc:  # noqa: BLE001 - a failing check is a result: recorded with its error, by metric
            error = f"{type(exc).__name__}: {exc}"[:2000]
            logger.warning("benchmark check %s failed: %s", kind_name, error)
            out.extend((metric, kind_name, None, error) for metric in kind.metrics(params))
            continue
        out.extend((m.metric, kind_name, m, "") for m in measurements)
    return out


def _timed_measure(checks: list[dict]) -> tuple[list, float]:
    started = time.perf_counter()
    measured = _measure(checks)
    return measured, (time.perf_counter() - started) * 1000


def _histories(suite_id: int, metrics: list[str], exclude_run: int) -> dict[str, list[float]]:
    """The earlier good values of each metric a judgement reads (newest first), in one query."""
    newest_first = Window(RowNumber(), partition_by=[F("metric")], order_by=[F("created_at").desc(), F("pk").desc()])
    rows = (
        BenchmarkResult.objects.filter(suite_id=suite_id, metric__in=metrics, ok=True)
        .exclude(run_id=exclude_run)
        .annotate(rank=newest_first)
        .filter(rank__lte=history_depth())
        .order_by("metric", "rank")
        .values_list("metric", "value")
    )
    histories: dict[str, list[float]] = {metric: [] for metric in metrics}
    for metric, value in rows:
        histories[metric].append(value)
    return histories


def execute_run(run_id: int) -> BenchmarkRun:
    """Run a queued run's checks once; a run already claimed (redelivery) is returned unchanged.

    A run left ``running`` by a worker that died is claimed again once it is older than the task's hard
    time limit: no live worker can still be running it.
    """
    now = timezone.now()
    abandoned = Q(status=BenchmarkRunStatus.RUNNING, started_at__lt=now - timedelta(seconds=ABANDONED_AFTER))
    claimed = BenchmarkRun.objects.filter(Q(status=BenchmarkRunStatus.QUEUED) | abandoned, pk=run_id).update(
        status=BenchmarkRunStatus.RUNNING, started_at=now
    )
    run = BenchmarkRun.objects.select_related("suite").get(pk=run_id)
    if not claimed:
        return run
    measured, duration_ms = _timed_measure(run.suite.checks)
    with transaction.atomic():
        results = _finish(run, measured, duration_ms)
    return _after(run, results)


def _finish(run: BenchmarkRun, measured: list, duration_ms: float) -> list[BenchmarkResult]:
    """Judge and store the results, set the run's final status and audit it (inside the caller's transaction)."""
    histories = _histories(run.suite_id, [m.name for m, _, measurement, _ in measured if measurement], run.pk)
    results = []
    for metric, kind, measurement, error in measured:
        result = BenchmarkResult(
            run=run,
            suite_id=run.suite_id,
            check_kind=kind,
            metric=metric.name,
            unit=metric.unit,
            higher_is_better=metric.higher_is_better,
            ok=measurement is not None,
            error=error,
        )
        if measurement is not None:
            verdict = judge(
                measurement.value, histories[metric.name], metric, persistent=run.trigger != Trigger.CONTRACT
            )
            base = verdict.baseline
            result.value = measurement.value
            result.details = {**measurement.details, "judgement": verdict.details()}
            result.regression = verdict.regression
            if base is not None:
                result.baseline_median, result.baseline_mad = base.median, base.mad
                result.baseline_samples, result.threshold = base.samples, base.threshold
        results.append(result)
    run.failed_checks = sum(not r.ok for r in results)
    run.regression_count = sum(r.regression for r in results)
    if run.failed_checks:
        run.status = BenchmarkRunStatus.FAILED
    elif run.regression_count:
        run.status = BenchmarkRunStatus.REGRESSED
    else:
        run.status = BenchmarkRunStatus.PASSED
    run.finished_at = timezone.now()
    run.duration_ms = duration_ms
    BenchmarkResult.objects.bulk_create(results)
    updated = BenchmarkRun.objects.filter(pk=run.pk, status=BenchmarkRunStatus.RUNNING).update(
        status=run.status,
        finished_at=run.finished_at,
        duration_ms=duration_ms,
        failed_checks=run.failed_checks,
        regression_count=run.regression_count,
    )
    assert updated == 1, "only the claimant of a running run finishes it"
    audit.record(
        "benchmark.run_finished",
        actor=ACTOR,
        obj=run,
        data={
            "suite": run.suite.name,
            "trigger": run.trigger,
            "status": run.status,
            "duration_ms": round(duration_ms, 3),
            "failed": [f"{r.metric}: {r.error}" for r in results if not r.ok],
            "regressions": [r.metric for r in results if r.regression],
        },
    )
    return results


def _after(run: BenchmarkRun, results: list[BenchmarkResult]) -> BenchmarkRun:
    regressed = [r for r in results if r.regression]
    # A run a contract asked for answers the contract (whose run rolls back); it never opens incidents itself.
    if regressed and run.trigger != Trigger.CONTRACT:
        _open_incidents(run, regressed)
    return run


def fingerprint(suite: str, metric: str) -> str:
    return hashlib.sha256(f"benchmark:{suite}:{metric}".encode()).hexdigest()


def _open_incidents(run: BenchmarkRun, results: list[BenchmarkResult]) -> None:
    from incidents.services import Signal, ingest

    suite = run.suite.name
    for r in results:
        direction = "below" if r.higher_is_better else "above"
        judged = r.details.get("judgement", {})
        signal = Signal(
            source="benchmark",
            title=f"Benchmark regression: {suite} {r.metric}",
            service="grace",
            severity="warning",
            message=(
                f"{r.metric} = {r.value:.3f} {r.unit} in run #{run.pk}, {direction} the threshold {r.threshold:.3f} "
                f"(median {r.baseline_median:.3f}, MAD {r.baseline_mad:.3f} over {r.baseline_samples} runs); "
                f"{judged.get('recent_over', 1)} of the last {judged.get('window', 1)} runs are {direction} it"
            ),
            labels={
                "suite": suite,
                "metric": r.metric,
                "value": round(r.value, 4),
                "baseline": round(r.baseline_median, 4),
                "threshold": round(r.threshold, 4),
                "run_id": run.pk,
            },
            fingerprint=fingerprint(suite, r.metric),
            raw={"run_id": run.pk, "result_id": r.pk, "details": r.details},
        )
        with transaction.atomic():
            incident = ingest(signal, actor=ACTOR).incident
            BenchmarkResult.objects.filter(pk=r.pk).update(incident=incident)


def regressions(run: BenchmarkRun) -> list[dict]:
    """The run's regressed metrics: ``[{"metric", "value", "baseline", "threshold"}]``."""
    return [
        {"metric": metric, "value": value, "baseline": base, "threshold": threshold}
        for metric, value, base, threshold in run.results.filter(regression=True)
        .order_by("pk")
        .values_list("metric", "value", "baseline_median", "threshold")
    ]


def no_regression(suite: str = "smoke", *, trigger: str = Trigger.CONTRACT) -> dict:
    """Facts for a contract predicate "no regression on the suite": runs it now, in the caller.

    ``{"passed": bool, "run_id", "status", "regressions": [...], "failures": [...]}``; ``passed`` is false when
    a metric regressed or a check could not run.
    """
    run = run_suite(suite, trigger=trigger)
    found, failed = regressions(run), failures(run)
    return {
        "passed": not found and not failed,
        "run_id": run.pk,
        "status": run.status,
        "regressions": found,
        "failures": failed,
    }


def failures(run: BenchmarkRun) -> list[dict]:
    """The run's checks that could not run: ``[{"metric", "error"}]``."""
    return [
        {"metric": m, "error": e} for m, e in run.results.filter(ok=False).order_by("pk").values_list("metric", "error")
    ]


@dataclass(frozen=True)
class SuiteStatus:
    suite: BenchmarkSuite
    latest: BenchmarkRun | None  # the latest finished run, with its results and suite loaded


@dataclass(frozen=True)
class VerificationStatus:
    suites: list[SuiteStatus]
    open_regressions: list  # active benchmark-regression incidents, newest first (at most 100)


def verification_status() -> VerificationStatus:
    """Every suite with its latest finished run, and the open regression incidents: four queries, however
    many suites and results there are."""
    latest = BenchmarkRun.objects.filter(suite=OuterRef("pk"), status__in=BenchmarkRunStatus.FINISHED).order_by(
        "-created_at", "-pk"
    )
    suites = list(BenchmarkSuite.objects.annotate(latest_id=Subquery(latest.values("pk")[:1])).order_by("name"))
    runs = (
        BenchmarkRun.objects.select_related("suite")
        .prefetch_related("results")
        .in_bulk([suite.latest_id for suite in suites if suite.latest_id])
    )
    regressions = Incident.objects.filter(source=Source.BENCHMARK, status__in=IncidentStatus.ACTIVE).order_by(
        "-last_seen"
    )[:100]
    return VerificationStatus(
        suites=[SuiteStatus(suite, runs.get(suite.latest_id)) for suite in suites],
        open_regressions=list(regressions),
    )


def history(suite: str, metric: str, *, limit: int = 30) -> list[dict]:
    """The metric's last ``limit`` results in the suite, newest first, each with what it was judged against:
    ``[{"run_id", "at", "value", "unit", "baseline", "threshold", "over_threshold", "regression"}]``."""
    rows = (
        BenchmarkResult.objects.filter(suite__name=suite, metric=metric)
        .order_by("-created_at", "-pk")
        .values(
            "run_id",
            "created_at",
            "value",
            "unit",
            "ok",
            "error",
            "baseline_median",
            "threshold",
            "higher_is_better",
            "regression",
        )[:limit]
    )
    out = []
    for row in rows:
        value, threshold = row["value"], row["threshold"]
        over = (
            value is not None
            and threshold is not None
            and (value < threshold if row["higher_is_better"] else value > threshold)
        )
        out.append(
            {
                "run_id": row["run_id"],
                "at": row["created_at"].isoformat(),
                "value": value,
                "unit": row["unit"],
                "error": row["error"] if not row["ok"] else "",
                "baseline": row["baseline_median"],
                "threshold": threshold,
                "over_threshold": over,
                "regression": row["regression"],
            }
        )
    return out
