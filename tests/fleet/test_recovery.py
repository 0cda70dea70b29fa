"""Recovery in about a minute: a stage message nobody started is sent again after the dispatch lease, Redis
outages are retried for a bounded time, and a burst survives Redis being killed (real Redis, workers, beat)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from incidents.models import Incident
from remediation import execution, lifecycle
from remediation.actions import load_all
from remediation.choices import RunStatus
from remediation.models import HealRun
from remediation.resilience import Blocked
from tests.support.processes import free_port, start_redis

S = RunStatus


def _run(status: str, *, age: float, started: bool) -> HealRun:
    now = timezone.now()
    incident = Incident.objects.create(
        fingerprint=f"fp-{status}-{started}", source="api", title="t", first_seen=now, last_seen=now
    )
    run = HealRun.objects.create(incident=incident, status=status)
    then = now - timedelta(seconds=age)
    HealRun.objects.filter(pk=run.pk).update(heartbeat_at=then, stage_started_at=then if started else None)
    return HealRun.objects.get(pk=run.pk)


@pytest.mark.django_db
def test_a_stage_message_nobody_started_is_sent_again_after_the_lease_not_the_hard_limit(
    settings, published, django_capture_on_commit_callbacks
):
    settings.GRACE_DISPATCH_LEASE_SECONDS = 45
    lost = _run(S.APPROVED, age=50, started=False)  # its message never reached a worker
    busy = _run(S.VERIFYING, age=50, started=True)  # a worker is in it: bounded by the hard limit
    fresh = _run(S.SNAPSHOTTED, age=10, started=False)  # still within its lease

    with django_capture_on_commit_callbacks(execute=True):
        counts = lifecycle.reap()

    assert counts["redispatched"] == 1
    assert [name for name, args, _ in published if args == [lost.pk]] == ["remediation.snapshot_run"]
    assert not [args for _, args, _ in published if args in ([busy.pk], [fresh.pk])]
    assert HealRun.objects.get(pk=lost.pk).reaper_tries == 1


@pytest.mark.django_db
def test_only_one_of_several_messages_for_a_stage_enters_it(settings):
    from remediation.services import enter_stage

    run = _run(S.APPROVED, age=0, started=False)
    copies = [HealRun.objects.get(pk=run.pk) for _ in range(3)]  # a re-send and the late original, as read

    entered = [enter_stage(copy) for copy in copies]

    assert entered == [True, False, False]


@pytest.mark.django_db
def test_an_unreadable_breaker_is_retried_until_redis_is_back_then_the_action_runs_once(settings, tmp_path):
    port = free_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    settings.GRACE_INFRA_RETRY_SECONDS = 30
    settings.GRACE_PROBE_LOOPBACK_PORTS = [9]
    action = load_all().get("http.probe")
    calls = []
    servers = []

    def redis_comes_back():
        time.sleep(1.5)
        servers.append(start_redis(tmp_path, port))

    helper = threading.Thread(target=redis_comes_back)
    helper.start()
    try:
        original = action.execute
        object.__setattr__(action, "execute", lambda params: calls.append(1) or original(params))
        try:
            result = execution._guarded(action, action.validate({"url": "http://127.0.0.1:9/"}))
        finally:
            object.__setattr__(action, "execute", original)
    finally:
        helper.join()
        for server in servers:
            server.stop()

    assert calls == [1]
    assert result["ok"] is False  # the probe itself ran (nothing listens on port 9)


@pytest.mark.django_db
def test_with_redis_down_for_good_the_step_is_blocked_after_the_bounded_retry(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.GRACE_INFRA_RETRY_SECONDS = 1
    settings.GRACE_PROBE_LOOPBACK_PORTS = [9]
    action = load_all().get("http.probe")
    started = time.monotonic()

    with pytest.raises(Blocked) as raised:
        execution._guarded(action, action.validate({"url": "http://127.0.0.1:9/"}))

    assert raised.value.unreadable and "resilience state unavailable" in raised.value.reason
    assert 1 <= time.monotonic() - started < 15
