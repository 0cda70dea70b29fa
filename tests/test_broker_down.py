"""With Redis down (broker, result store, breaker and limit state), an endpoint that hands work off answers
503 with the reason within its timeout, and leaves nothing queued for good: a run it created is failed, or
picked up by the reaper. Real processes: granian serving GRACE, pointed at a redis-server that was
started and stopped on a free port (the port refuses connections, as a crashed Redis's does).
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
import requests
from django.conf import settings
from django.utils import timezone

from approvals import tokens
from approvals.models import AuditEvent
from incidents.models import Incident
from learning.models import BenchmarkRun
from remediation import lifecycle
from remediation.models import HealRun, RunEvent
from tests.support.processes import ROOT, free_port, process_env, start_redis, start_web

pytestmark = pytest.mark.django_db(transaction=True)

# Every answer comes well within this (it took 19 s before hand-offs gave up after two quick retries).
ANSWER_WITHIN = 3.0


@pytest.fixture(scope="module")
def dead_redis_url(tmp_path_factory) -> str:
    port = free_port()
    server = start_redis(tmp_path_factory.mktemp("redis"), port)
    server.stop()
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="module")
def web(django_db_setup, tmp_path_factory, dead_redis_url):
    """One web process for the module (it reads each test's rows from the test database)."""
    server, url = start_web(tmp_path_factory.mktemp("web"), REDIS_URL=dead_redis_url)
    yield url
    server.stop()


@pytest.fixture
def api(web, admin_user):
    session = requests.Session()
    session.headers["Authorization"] = f"Token {tokens.issue(admin_user, name='broker-down')[1]}"

    def call(method: str, path: str, **kwargs) -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = session.request(method, f"{web}{path}", timeout=30, **kwargs)
        return response, time.monotonic() - started

    call("GET", "/api/health/")  # the first request loads the application: not part of any timing
    yield call
    session.close()


def _incident(**fields) -> Incident:
    now = timezone.now()
    return Incident.objects.create(
        fingerprint=f"broker-down-{now.timestamp()}",
        source="api",
        service="orders-db",
        title="orders-db is slow",
        first_seen=now,
        last_seen=now,
        diagnosis_code="sqlite_wal_bloat",
        **fields,
    )


def test_it_fails_a_benchmark_run_it_cannot_hand_off_and_answers_503(api):
    response, elapsed = api("POST", "/api/verification/benchmarks/smoke/")

    assert response.status_code == 503, response.text
    assert elapsed < ANSWER_WITHIN
    assert "Redis is unavailable" in response.json()["detail"]
    run = BenchmarkRun.objects.get()
    assert run.status == "failed"
    failed = AuditEvent.objects.get(action="benchmark.run_failed")
    assert failed.object_id == str(run.pk)
    assert "could not be handed to a worker" in failed.data["reason"]


def test_it_answers_503_naming_the_run_it_could_not_hand_off_and_the_reaper_sends_it_again(api):
    incident = _incident()

    response, elapsed = api("POST", f"/api/incidents/{incident.pk}/heal/", json={})

    assert response.status_code == 503, response.text
    assert elapsed < ANSWER_WITHIN
    run = HealRun.objects.get(incident=incident)
    assert f"run #{run.pk} was created" in response.json()["detail"]
    later = timezone.now() + timedelta(seconds=settings.GRACE_STAGE_GRACE_SECONDS + 1)
    assert lifecycle.reap(now=later)["redispatched"] == 1
    assert RunEvent.objects.filter(run=run, note__startswith="reaper:").exists()


def test_it_answers_503_when_a_rollback_cannot_be_handed_off(api):
    run = HealRun.objects.create(
        incident=_incident(status="resolved"), status="SUCCEEDED", family="local", finished_at=timezone.now()
    )

    response, elapsed = api("POST", f"/api/runs/{run.pk}/rollback/")

    assert response.status_code == 503, response.text
    assert elapsed < ANSWER_WITHIN
    assert "reaper" in response.json()["detail"]
    assert HealRun.objects.get(pk=run.pk).status == "ROLLING_BACK"


def test_a_cancel_is_answered_although_recording_its_outcome_waits_for_redis(api):
    run = HealRun.objects.create(incident=_incident(), status="AWAITING_APPROVAL", family="local")

    response, elapsed = api("POST", f"/api/runs/{run.pk}/cancel/")

    assert response.status_code == 200, response.text
    assert elapsed < ANSWER_WITHIN
    assert HealRun.objects.get(pk=run.pk).status == "CANCELLED"


def test_it_answers_503_when_a_breaker_cannot_be_reset(api):
    response, elapsed = api("POST", "/api/resilience/reset/", json={"action": "sqlite.checkpoint", "target": "x"})

    assert response.status_code == 503, response.text
    assert elapsed < ANSWER_WITHIN
    assert "Redis is unavailable" in response.json()["detail"]
    assert not AuditEvent.objects.filter(action="resilience.breaker_reset").exists()


@pytest.mark.parametrize("path", ["/api/resilience/", "/api/health/"])
def test_reads_that_need_redis_answer_503_in_time(api, path):
    response, elapsed = api("GET", path)

    assert response.status_code == 503, response.text
    assert elapsed < ANSWER_WITHIN


def test_intake_is_accepted_and_the_reaper_starts_the_run_once_redis_is_back(api):
    response, elapsed = api(
        "POST", "/api/incidents/?wait=true", json={"title": "orders-db WAL is large", "service": "orders"}
    )

    assert response.status_code == 201, response.text
    assert elapsed < ANSWER_WITHIN
    assert Incident.objects.filter(pk=response.json()["id"]).exists()


def test_a_delivery_is_stored_and_acknowledged_while_redis_is_down(api):
    from incidents.models import Delivery

    response, elapsed = api("POST", "/api/incidents/", json={"title": "orders-db WAL is large", "service": "orders"})

    assert response.status_code == 202, response.text
    assert elapsed < ANSWER_WITHIN
    delivery = Delivery.objects.get(pk=response.json()["delivery"])
    assert delivery.status == "pending"  # beat's redrive sends a consumer once Redis is back


def test_the_in_process_celery_check_gives_up_within_its_timeout(dead_redis_url):
    script = (
        "import time; from learning import checks; started = time.monotonic()\n"
        "try:\n    checks.celery_roundtrip({})\nexcept Exception as exc:\n    print('error', type(exc).__name__)\n"
        "print('elapsed', round(time.monotonic() - started, 2))"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=process_env(REDIS_URL=dead_redis_url, GRACE_BENCH_CELERY_TIMEOUT="2"),
    )

    assert "error" in result.stdout, result.stdout + result.stderr
    elapsed = float(result.stdout.split("elapsed")[1])
    assert elapsed < 2.5, result.stdout
