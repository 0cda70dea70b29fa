"""`/api/health/` reports every component and answers 503 naming what fails."""

import json
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from approvals import audit, checkpoints, sealing
from approvals.models import AuditCheckpoint, AuditEvent
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
    assert set(body["components"]) == {"database", "redis", "worker", "beat", "audit", "intake"}
    # No audit checkpoint has been signed in this fresh database: a warning, not a failure.
    assert body["warnings"] == ["audit"]
    assert "no audit checkpoint has been issued" in body["components"]["audit"]["warning"]
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
        sys.executable,
        "-m",
        "celery",
        "-A",
        "grace_site",
        "beat",
        "-l",
        "info",
        "--pidfile=",
        f"--schedule={tmp_path / 'beat-schedule'}",
        "-S",
        "django_celery_beat.schedulers:DatabaseScheduler",
    ]
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


@pytest.fixture
def checkpoint_file(settings, tmp_path):
    settings.GRACE_AUDIT_CHECKPOINT_SINKS = [f"file://{tmp_path / 'checkpoints.jsonl'}"]


def _audit_component(client) -> tuple[dict, dict]:
    body = client.get("/api/health/").json()
    return body, body["components"]["audit"]


@pytest.mark.django_db
def test_health_warns_about_a_missing_audit_checkpoint_without_failing(client, checkpoint_file):
    audit.record("test.event")
    audit.seal()

    body, component = _audit_component(client)

    assert "audit" in body["warnings"] and "audit" not in body["failing"]
    assert component["ok"] is True
    assert "no audit checkpoint has been issued" in component["warning"]


@pytest.mark.django_db
def test_health_warns_about_a_stale_audit_checkpoint(client, checkpoint_file, settings):
    audit.record("test.event")
    audit.seal()
    an_hour_ago, head = timezone.now() - timedelta(hours=1), sealing.head()
    text = checkpoints.body(settings.GRACE_AUDIT_ORIGIN, head.seq, head.hash, an_hour_ago)
    record = checkpoints.sign(text, checkpoints.signing_key())
    AuditCheckpoint.objects.create(  # signed an hour ago
        size=head.seq,
        head=head.hash,
        issued_at=an_hour_ago,
        origin=settings.GRACE_AUDIT_ORIGIN,
        key_id=record["key_id"],
        body=text,
        signature=record["signature"],
        sinks={},
    )
    audit.record("test.later")  # the chain grew; nothing has vouched for it for an hour
    audit.seal()

    body, component = _audit_component(client)

    assert "audit" in body["warnings"] and "audit" not in body["failing"]
    assert "the latest audit checkpoint is stale: issued 36" in component["warning"]
    assert component["checkpoint_age_seconds"] >= 3600


@pytest.mark.django_db
def test_a_fresh_checkpoint_of_the_head_leaves_no_audit_warning(client, checkpoint_file):
    audit.record("test.event")
    audit.seal()
    checkpoints.issue()

    body, component = _audit_component(client)

    assert "warning" not in component, component
    assert "audit" not in body["warnings"]
    assert (component["checkpoint_covers_head"], component["unsealed"]) == (True, 0)


@pytest.mark.django_db
def test_health_warns_when_entries_wait_too_long_for_the_sealer(client, checkpoint_file):
    checkpoints.issue()
    AuditEvent.objects.create(at=timezone.now() - timedelta(minutes=10), actor="system", action="test.waiting")

    body, component = _audit_component(client)

    assert "1 audit entries unsealed, the oldest for 60" in component["warning"]
    assert "audit" not in body["failing"]
