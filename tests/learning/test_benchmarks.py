"""Benchmark suites against real services: PostgreSQL/SQLite, Redis, a Celery worker and HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import current_app
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from approvals.models import AuditEvent
from incidents import defaults as incident_defaults
from learning import benchmarks, defaults
from learning.models import BenchmarkResult, BenchmarkRun, BenchmarkSuite
from tests.support.processes import start_beat
from tests.support.runs import wait_for as poll_until


def _point_smoke_at(endpoint, **redis_params) -> None:
    suite = BenchmarkSuite.objects.get(name="smoke")
    for check in suite.checks:
        if check["kind"] == "http":
            check["params"]["url"] = endpoint.url("ok")
        if check["kind"] == "redis":
            check["params"].update(redis_params)
    suite.save()


# The worker only answers grace.ping in these tests (no database access), so they need no committed rows.
@pytest.mark.django_db
def test_the_smoke_suite_measures_four_real_round_trips(celery_worker, endpoint):
    defaults.install()
    _point_smoke_at(endpoint)

    run = benchmarks.run_suite("smoke")

    assert run.status == "passed", benchmarks.failures(run)
    values = dict(run.results.values_list("metric", "value"))
    assert set(values) == {"database.roundtrip_ms", "redis.roundtrip_ms", "celery.roundtrip_ms", "http.health_ms"}
    assert all(value > 0 for value in values.values())
    assert run.duration_ms >= sum(values.values())
    assert AuditEvent.objects.filter(action="benchmark.run_finished", object_id=str(run.pk)).exists()


@pytest.mark.django_db
def test_with_redis_unreachable_the_smoke_suite_reports_the_redis_check_failed_with_its_error(
    celery_worker, endpoint, dead_port
):
    defaults.install()
    _point_smoke_at(endpoint, url=f"redis://127.0.0.1:{dead_port}/0")

    run = benchmarks.run_suite("smoke")

    assert run.status == "failed"
    assert run.failed_checks == 1
    failed = benchmarks.failures(run)
    assert [f["metric"] for f in failed] == ["redis.roundtrip_ms"]
    assert "ConnectionError" in failed[0]["error"] and "refused" in failed[0]["error"]
    assert set(run.results.filter(ok=True).values_list("metric", flat=True)) == {
        "database.roundtrip_ms",
        "celery.roundtrip_ms",
        "http.health_ms",
    }


@pytest.mark.django_db
def test_an_unhealthy_endpoint_fails_the_http_check_with_its_status(endpoint):
    suite = BenchmarkSuite.objects.create(
        name="edge", checks=[{"kind": "http", "params": {"url": endpoint.url("status/503")}}]
    )

    run = benchmarks.run_suite(suite.name)

    assert run.status == "failed"
    assert "HTTP 503" in benchmarks.failures(run)[0]["error"]


@pytest.mark.django_db
def test_a_lasting_slowdown_is_a_regression_at_its_kth_run_and_opens_one_incident(endpoint, settings):
    # The exact 3x boundary is tested on synthetic and recorded series (test_detection); over real HTTP on a
    # shared machine the step is made large enough (10 ms -> 200 ms) that scheduling noise cannot hide it.
    settings.GRACE_BENCH_MIN_SAMPLES, settings.GRACE_BENCH_PERSIST_K, settings.GRACE_BENCH_PERSIST_N = 5, 3, 5
    incident_defaults.install()  # the shipped diagnosis rules
    suite = BenchmarkSuite.objects.create(
        name="latency", checks=[{"kind": "http", "params": {"name": "api", "url": endpoint.url("delay/10")}}]
    )
    for _ in range(9):  # the 5 baseline results, then 4 more to fill the persistence window
        assert benchmarks.run_suite("latency").status == "passed"

    suite.checks[0]["params"]["url"] = endpoint.url("delay/200")
    suite.save()
    once, twice, third, fourth = (benchmarks.run_suite("latency") for _ in range(4))

    assert (once.status, twice.status) == ("passed", "passed")  # over the threshold, not yet k of the last n
    assert BenchmarkResult.objects.get(run=twice).details["judgement"] == {
        "over_threshold": True,
        "recent_over": 2,
        "window": 5,
        "needed": 3,
    }
    assert third.status == "regressed", list(third.results.values("value", "baseline_median", "threshold"))
    [regression] = benchmarks.regressions(third)
    assert regression["metric"] == "http.api_ms"
    assert regression["value"] > regression["threshold"] >= 2 * regression["baseline"]
    incident = BenchmarkResult.objects.get(run=third).incident
    assert incident is not None and incident.source == "benchmark"
    assert incident.diagnosis_code == "benchmark_regression"
    assert incident.labels["suite"] == "latency" and incident.labels["metric"] == "http.api_ms"
    assert incident.fingerprint == benchmarks.fingerprint("latency", "http.api_ms")
    assert "3 of the last 5 runs are above it" in incident.message
    # The next regressed run of the same metric is an occurrence of the same incident, not a new one.
    assert fourth.status == "regressed"
    assert BenchmarkResult.objects.get(run=fourth).incident_id == incident.pk
    incident.refresh_from_db()
    assert incident.occurrences == 2


@pytest.mark.django_db
def test_a_run_a_contract_asked_for_is_judged_on_its_own_value_and_opens_no_incident(endpoint, settings):
    from incidents.models import Incident

    settings.GRACE_BENCH_MIN_SAMPLES = 5
    incident_defaults.install()
    suite = BenchmarkSuite.objects.create(
        name="latency", checks=[{"kind": "http", "params": {"name": "api", "url": endpoint.url("delay/10")}}]
    )
    for _ in range(settings.GRACE_BENCH_MIN_SAMPLES + settings.GRACE_BENCH_PERSIST_N - 1):
        assert benchmarks.run_suite("latency").status == "passed"
    suite.checks[0]["params"]["url"] = endpoint.url("delay/200")
    suite.save()

    verdict = benchmarks.no_regression("latency")

    assert verdict["passed"] is False and [r["metric"] for r in verdict["regressions"]] == ["http.api_ms"]
    assert not Incident.objects.filter(source="benchmark").exists()  # the contract's run rolls back instead


@pytest.mark.django_db(transaction=True)
def test_the_scheduled_task_runs_the_suite_on_a_worker_and_install_is_idempotent(celery_worker, endpoint):
    assert defaults.install() == 4
    assert defaults.install() == 0
    _point_smoke_at(endpoint)
    entries = PeriodicTask.objects.filter(task="learning.benchmark_run")
    assert {(e.queue, e.args) for e in entries} == {("benchmarks", '["smoke"]'), ("benchmarks", '["full"]')}
    assert all(e.expire_seconds and e.expire_seconds < e.interval.every for e in entries)

    run_id = current_app.send_task("learning.benchmark_run", args=["smoke"]).get(timeout=60)

    run = BenchmarkRun.objects.get(pk=run_id)
    assert (run.trigger, run.status) == ("schedule", "passed")


@pytest.mark.django_db
def test_a_finished_run_is_never_run_again():
    suite = BenchmarkSuite.objects.create(name="db", checks=[{"kind": "database", "params": {}}])
    run = benchmarks.run_suite(suite.name)

    again = benchmarks.execute_run(run.pk)

    assert again.status == "passed"
    assert BenchmarkResult.objects.filter(run=run).count() == 1


@pytest.mark.django_db
def test_the_full_suite_measures_throughput_queue_latency_disk_and_http_percentiles(
    celery_worker, endpoint, settings, tmp_path
):
    settings.GRACE_BENCH_DIR = tmp_path
    settings.GRACE_BENCH_HTTP_URLS = [endpoint.url("ok"), endpoint.url("delay/5")]
    defaults.install()

    run = benchmarks.run_suite("full")

    assert run.status == "passed", benchmarks.failures(run)
    results = {r.metric: r.value for r in run.results.all()}
    assert results["database.write_rows_per_s"] > 0 and results["database.read_rows_per_s"] > 0
    assert results["disk.write_mb_per_s"] > 0 and results["disk.fsync_ms"] >= 0
    assert 0 < results["queue.latency_p50_ms"] <= results["queue.latency_p99_ms"]
    port = endpoint.server.server_port
    slow = [results[f"http.127-0-0-1-{port}-delay-5.p{q}_ms"] for q in (50, 95, 99)]
    assert 5 <= slow[0] <= slow[1] <= slow[2]
    assert f"http.127-0-0-1-{port}-ok.p50_ms" in results
    assert list(tmp_path.iterdir()) == []  # the disk check cleans up


def test_suite_definitions_are_validated_by_kind():
    with pytest.raises(ValidationError) as excinfo:
        BenchmarkSuite(name="x", checks=[{"kind": "teleport"}]).clean()
    assert "checks" in excinfo.value.message_dict


@pytest.mark.django_db
def test_an_unknown_suite_is_an_error_naming_it():
    with pytest.raises(BenchmarkSuite.DoesNotExist, match="no-such-suite"):
        benchmarks.run_suite("no-such-suite")


@pytest.mark.django_db
def test_a_run_abandoned_by_a_dead_worker_is_claimed_again_but_a_live_one_is_not():
    suite = BenchmarkSuite.objects.create(name="db", checks=[{"kind": "database", "params": {}}])
    live = benchmarks.create_run("db")
    dead = benchmarks.create_run("db")
    BenchmarkRun.objects.filter(pk=live.pk).update(status="running", started_at=timezone.now())
    BenchmarkRun.objects.filter(pk=dead.pk).update(
        status="running", started_at=timezone.now() - timedelta(seconds=benchmarks.ABANDONED_AFTER + 1)
    )

    assert benchmarks.execute_run(live.pk).status == "running"
    assert benchmarks.execute_run(dead.pk).status == "passed"
    assert suite.runs.filter(results__isnull=False).distinct().count() == 1


@pytest.mark.django_db
def test_no_regression_gives_a_contract_its_verdict_and_evidence(endpoint):
    BenchmarkSuite.objects.create(name="edge", checks=[{"kind": "http", "params": {"url": endpoint.url("status/500")}}])

    verdict = benchmarks.no_regression("edge")

    assert verdict["passed"] is False and verdict["status"] == "failed"
    assert verdict["regressions"] == [] and "HTTP 500" in verdict["failures"][0]["error"]
    assert BenchmarkRun.objects.get(pk=verdict["run_id"]).trigger == "contract"


def _poll(predicate, timeout: float = 60.0):
    return poll_until(predicate, timeout=timeout, interval=0.1)


@pytest.mark.django_db(transaction=True)
def test_real_beat_fires_the_smoke_schedule_onto_the_benchmarks_queue(celery_worker, endpoint, tmp_path):
    defaults.install()
    _point_smoke_at(endpoint)
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="learning: smoke benchmark").update(interval=every_second)
    PeriodicTask.objects.filter(name="learning: full benchmark").update(enabled=False)

    beat = start_beat(tmp_path)
    try:
        run = _poll(lambda: BenchmarkRun.objects.filter(trigger="schedule", status__in=["passed", "failed"]).first())
    finally:
        beat.stop()

    assert (run.suite.name, run.status) == ("smoke", "passed"), benchmarks.failures(run)
