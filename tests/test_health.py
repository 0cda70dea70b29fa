"""`/api/health/` reports every component and answers 503 naming what fails."""

import json
import sys
import time

import pytest
from django.conf import settings

from grace_site.scheduler import BEAT_SCHEDULER_KEY, BEAT_TICK_KEY
from tests.support.processes import Managed, process_env, start_beat
from tests.support.runs import wait_for as poll_until


def _wait_for_tick(redis_client, timeout=30.0):
    poll_until(lambda: redis_client.get(BEAT_TICK_KEY), timeout=timeout, interval=0.1, what="beat to record a tick")


@pytest.mark.django_db(transaction=True)
def test_health_is_ok_with_a_live_worker_and_beat(client, celery_worker, redis_client, tmp_path):
    redis_client.delete(BEAT_TICK_KEY)
    beat = start_beat(tmp_path)
    try:
        _wait_for_tick(redis_client)
        response = client.get("/api/health/")
    finally:
        beat.stop()

    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert set(body["components"]) == {"database", "redis", "worker", "beat"}
    assert celery_worker in body["components"]["worker"]["workers"]
    assert body["version"]
    assert json.loads(redis_client.get(BEAT_SCHEDULER_KEY))["records_ticks"] is True


@pytest.mark.django_db
def test_health_names_beat_when_it_has_not_ticked(client, redis_client):
    redis_client.delete(BEAT_TICK_KEY, BEAT_SCHEDULER_KEY)

    response = client.get("/api/health/")

    assert response.status_code == 503
    assert "beat" in response.json()["failing"]
    assert response.json()["components"]["beat"]["error"] == "beat has recorded no tick"


@pytest.mark.django_db(transaction=True)
def test_health_says_plainly_when_beat_runs_a_scheduler_that_records_no_tick(client, redis_client, tmp_path):
    redis_client.delete(BEAT_TICK_KEY, BEAT_SCHEDULER_KEY)
    argv = [
        sys.executable, "-m", "celery", "-A", "grace_site", "beat", "-l", "info", "--pidfile=",
        f"--schedule={tmp_path / 'beat-schedule'}", "-S", "django_celery_beat.schedulers:DatabaseScheduler",
    ]  # fmt: skip
    beat = Managed(argv, process_env(), tmp_path / "beat.log")
    try:
        poll_until(lambda: redis_client.get(BEAT_SCHEDULER_KEY), timeout=30, interval=0.1, what="beat to start")
        response = client.get("/api/health/")
    finally:
        beat.stop()

    beat_report = response.json()["components"]["beat"]
    assert response.status_code == 503
    assert beat_report["scheduler"] == "django_celery_beat.schedulers:DatabaseScheduler"
    assert "records no tick" in beat_report["error"]
    assert "-S grace_site.scheduler:GraceScheduler" in beat_report["error"]


@pytest.mark.django_db
def test_health_names_a_stale_beat(client, redis_client):
    redis_client.set(BEAT_TICK_KEY, repr(time.time() - 3600))

    body = client.get("/api/health/").json()

    assert "beat" in body["failing"]
    assert body["components"]["beat"]["age_seconds"] >= 3599


@pytest.mark.django_db
def test_health_names_redis_when_it_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    response = client.get("/api/health/")

    assert response.status_code == 503
    body = response.json()
    assert "redis" in body["failing"]
    assert "Error" in body["components"]["redis"]["error"]
    assert body["components"]["database"]["ok"] is True


@pytest.mark.django_db
def test_health_needs_no_auth_and_leaks_no_secrets(client):
    response = client.get("/api/health/")

    text = response.content.decode()
    assert response.status_code in (200, 503)
    assert settings.SECRET_KEY not in text
    assert settings.REDIS_URL not in text
