"""Learning and verification API over real rows, a real worker and real HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from learning import defaults, services
from learning.models import BenchmarkRun, BenchmarkSuite, PlaybookStatistics
from remediation.models import Playbook
from tests.learning.factories import make_run, outcome_kwargs


def _record(service: str, playbook: str, outcome: str, *, days_ago: float = 0, seconds: float = 10, **extra):
    finished = timezone.now() - timedelta(days=days_ago)
    run = make_run(service=service, diagnosis=extra.pop("diagnosis", "db_locked"), now=finished)
    return services.record_outcome(
        **outcome_kwargs(run, playbook=playbook, outcome=outcome, finished_at=finished, seconds=seconds, **extra)
    )


@pytest.fixture
def viewer(django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw-viewer-123456")
    codenames = ["view_playbookstatistics", "view_outcomerecord", "view_benchmarkrun"]
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="learning", codename__in=codenames))
    return user


@pytest.mark.django_db
def test_stats_list_filters_by_diagnosis_playbook_and_service(api_client, viewer):
    _record("orders-db", "kill-blocker", "succeeded")
    _record("orders-db", "kill-blocker", "failed")
    _record("users-db", "kill-blocker", "succeeded")
    _record("users-db", "vacuum", "rolled_back", diagnosis="db_bloat")
    api_client.force_authenticate(viewer)

    everything = api_client.get("/api/learning/stats/").json()
    locked = api_client.get("/api/learning/stats/", {"diagnosis": "db_locked"}).json()
    orders = api_client.get("/api/learning/stats/", {"service": "orders-db"}).json()
    vacuum = api_client.get("/api/learning/stats/", {"playbook": "vacuum"}).json()

    assert everything["count"] == 2
    [row] = locked["results"]
    assert (row["playbook"], row["attempts"], row["successes"], row["failures"]) == ("kill-blocker", 3, 2, 1)
    assert row["posterior_mean"] == pytest.approx(0.6) and row["confidence"] == pytest.approx(0.2535, abs=1e-4)
    [row] = orders["results"]
    assert (row["attempts"], row["successes"], row["success_rate"]) == (2, 1, 0.5)
    assert [r["rollbacks"] for r in vacuum["results"]] == [1]


@pytest.mark.django_db
def test_the_learning_api_needs_authentication_and_view_permissions(api_client, django_user_model):
    assert api_client.get("/api/learning/stats/").status_code == 401
    api_client.force_authenticate(django_user_model.objects.create_user("nobody", password="pw-nobody-123456"))

    for url in ["/api/learning/stats/", "/api/learning/recommendations/?diagnosis=x", "/api/learning/analytics/"]:
        assert api_client.get(url).status_code == 403, url
    assert api_client.get("/api/verification/status/").status_code == 403
    assert api_client.post("/api/verification/benchmarks/smoke/").status_code == 403


@pytest.mark.django_db
def test_recommendations_rank_the_enabled_playbooks_of_a_diagnosis(api_client, viewer):
    Playbook.objects.create(name="kill-blocker", diagnosis_codes=["db_locked"])
    Playbook.objects.create(name="restart-db", diagnosis_codes=["db_locked", "db_down"])
    Playbook.objects.create(name="disabled-one", diagnosis_codes=["db_locked"], enabled=False)
    Playbook.objects.create(name="unrelated", diagnosis_codes=["disk_full"])
    PlaybookStatistics.objects.create(
        diagnosis_code="db_locked", playbook="kill-blocker", attempts=10, successes=9, failures=1
    )
    PlaybookStatistics.objects.create(
        diagnosis_code="db_locked", playbook="restart-db", attempts=10, successes=5, failures=5
    )
    api_client.force_authenticate(viewer)

    body = api_client.get("/api/learning/recommendations/", {"diagnosis": "db_locked"}).json()
    chosen = api_client.get("/api/learning/recommendations/", {"diagnosis": "db_locked", "candidates": "restart-db"})

    assert [r["playbook"] for r in body["recommendations"]] == ["kill-blocker", "restart-db"]
    best = body["recommendations"][0]
    assert best["score"] == pytest.approx(10 / 12) and best["evidence"]["attempts"] == 10
    assert body["thresholds"] == {
        "confidence_tier_threshold": 0.5,
        "pause_after_failures": 3,
        "min_attempts_for_confidence": 3,
    }
    assert [r["playbook"] for r in chosen.json()["recommendations"]] == ["restart-db"]


@pytest.mark.django_db
def test_recommendations_without_a_diagnosis_are_a_400_naming_the_field(api_client, viewer):
    api_client.force_authenticate(viewer)

    response = api_client.get("/api/learning/recommendations/")

    assert response.status_code == 400
    assert "diagnosis" in response.json()


@pytest.mark.django_db
def test_analytics_report_mttr_success_over_time_and_auto_resolved_versus_escalated(api_client, viewer):
    _record("orders-db", "kill-blocker", "succeeded", days_ago=2)
    _record("orders-db", "kill-blocker", "failed", days_ago=2)
    _record("orders-db", "kill-blocker", "succeeded", days_ago=1)
    _record("users-db", "kill-blocker", "escalated", days_ago=1)
    _record("users-db", "kill-blocker", "rejected", days_ago=1)
    _record("users-db", "kill-blocker", "succeeded", days_ago=60)  # outside the window
    api_client.force_authenticate(viewer)

    body = api_client.get("/api/learning/analytics/", {"days": 30}).json()
    orders = api_client.get("/api/learning/analytics/", {"service": "orders-db"}).json()

    assert (body["runs"], body["auto_resolved"], body["escalated"], body["failed"]) == (5, 2, 2, 1)
    assert body["success_rate"] == pytest.approx(2 / 3, abs=1e-4)
    # factories: the incident was first seen 5 minutes before the run finished
    assert body["mttr_seconds"] == pytest.approx(300, abs=5)
    assert [(d["attempts"], d["successes"]) for d in body["success_rate_over_time"]] == [(2, 1), (1, 1)]
    assert {s["service"]: s["escalated"] for s in body["per_service"]} == {"orders-db": 0, "users-db": 2}
    assert body["by_outcome"]["escalated"] == 1 and body["by_outcome"]["rejected"] == 1
    assert (orders["runs"], orders["success_rate"]) == (3, pytest.approx(2 / 3, abs=1e-4))
    assert api_client.get("/api/learning/analytics/", {"days": 0}).status_code == 400


@pytest.mark.django_db(transaction=True)
def test_posting_the_smoke_suite_with_wait_returns_its_results(api_client, admin_user, celery_worker, endpoint):
    defaults.install()
    suite = BenchmarkSuite.objects.get(name="smoke")
    suite.checks[3]["params"]["url"] = endpoint.url("ok")
    suite.save()
    api_client.force_authenticate(admin_user)

    response = api_client.post("/api/verification/benchmarks/smoke/?wait=true")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "passed" and body["suite"] == "smoke"
    assert {r["metric"] for r in body["results"] if r["ok"]} == {
        "database.roundtrip_ms",
        "redis.roundtrip_ms",
        "celery.roundtrip_ms",
        "http.health_ms",
    }
    status = api_client.get("/api/verification/status/").json()
    latest = {s["suite"]: s["latest"] for s in status["suites"]}
    assert latest["smoke"]["id"] == body["run_id"] and latest["full"] is None
    assert status["open_regressions"] == []


@pytest.mark.django_db(transaction=True)
def test_posting_a_suite_answers_202_with_the_run_id_and_the_run_can_be_awaited(api_client, admin_user, celery_worker):
    BenchmarkSuite.objects.create(name="quick", checks=[{"kind": "database", "params": {}}])
    api_client.force_authenticate(admin_user)

    response = api_client.post("/api/verification/benchmarks/quick/")

    assert response.status_code == 202
    run_id = response.json()["run_id"]
    assert BenchmarkRun.objects.filter(pk=run_id, suite__name="quick").exists()
    done = api_client.get(f"/api/verification/runs/{run_id}/", {"wait": "true", "timeout": 30})
    assert done.status_code == 200 and done.json()["status"] == "passed"


@pytest.mark.django_db
def test_an_unknown_suite_is_404_and_a_disabled_one_409(api_client, admin_user):
    BenchmarkSuite.objects.create(name="off", enabled=False, checks=[{"kind": "database", "params": {}}])
    api_client.force_authenticate(admin_user)

    assert api_client.post("/api/verification/benchmarks/nope/").status_code == 404
    disabled = api_client.post("/api/verification/benchmarks/off/")
    assert disabled.status_code == 409 and "suite" in disabled.json()


@pytest.mark.django_db
def test_the_verification_status_takes_the_same_queries_for_two_suites_or_twenty(api_client, admin_user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from learning.models import BenchmarkResult

    api_client.force_authenticate(admin_user)

    def add_suites(first: int, last: int) -> None:
        for i in range(first, last):
            suite = BenchmarkSuite.objects.create(name=f"suite-{i:02}", checks=[{"kind": "database", "params": {}}])
            for status in ("passed", "regressed"):
                run = BenchmarkRun.objects.create(suite=suite, status=status, finished_at=timezone.now())
                BenchmarkResult.objects.create(run=run, suite=suite, check_kind="database", metric="m", ok=True)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            body = api_client.get("/api/verification/status/").json()
        return len(captured), body

    add_suites(0, 2)
    few, _ = queries()
    add_suites(2, 20)
    many, body = queries()

    assert many == few
    latest = {entry["suite"]: entry["latest"] for entry in body["suites"]}
    assert len(latest) >= 20 and latest["suite-07"]["status"] == "regressed"  # the newest finished run
    assert latest["suite-07"]["suite"] == "suite-07" and len(latest["suite-07"]["results"]) == 1
