"""A lost worker delays a heal but never loses it, and never repeats a non-idempotent effect."""

import json
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from grace_site.celery import app
from incidents.models import Incident
from remediation import lifecycle
from remediation.choices import AttemptStatus, RunStatus
from remediation.models import ActionAttempt, HealRun
from remediation.services import transition
from tests.remediation.conftest import make_playbook
from tests.support import inventory
from tests.support.runs import wait_for, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)

SERVICE_ARGV = [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"]


class Supervisor:
    """Stands in for systemd/supervisord: starts the service, and starts it again `delay` s after it exits."""

    def __init__(self, pidfile, delay: float):
        self.pidfile, self.delay = pidfile, delay
        self.starts: list[int] = []
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._proc = subprocess.Popen(SERVICE_ARGV, start_new_session=True)
            self.starts.append(self._proc.pid)
            self.pidfile.write_text(f"{self._proc.pid}\n")
            self._proc.wait()
            self._stop.wait(self.delay)

    def start(self) -> "Supervisor":
        self._thread.start()
        wait_for(lambda: self.starts, timeout=10, what="the service to start")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
        self._thread.join(10)


@pytest.fixture
def supervised_service(allowed_root):
    pidfile = allowed_root / "payments.pid"
    services_file = settings.GRACE_SERVICES_FILE
    services_file.parent.mkdir(parents=True, exist_ok=True)
    services_file.write_text(
        json.dumps(
            {
                "payments": {
                    "kind": "pidfile",
                    "argv": SERVICE_ARGV,
                    "pidfile": str(pidfile),
                    "restart": "supervisor",
                    "start_timeout": 30,
                    "stop_timeout": 5,
                }
            }
        )
    )
    supervisor = Supervisor(pidfile, delay=3.0).start()
    yield supervisor
    supervisor.stop()
    services_file.unlink()


def test_a_worker_killed_during_a_restart_is_finished_by_the_reaper_exactly_once(
    worker_pool, celery_worker, supervised_service
):
    make_playbook(
        "restart-payments",
        "service_down",
        [
            {
                "action": "service.restart",
                "contract": [
                    {"field": "pid", "op": "!=", "value": "{snapshot.pid}"},
                    {"field": "running", "op": "==", "value": True, "within": 20},
                ],
            }
        ],
    )
    inventory.resource("payments", "service", "payments")
    incident = Incident.objects.create(
        fingerprint="payments-down",
        source="api",
        title="payments is down",
        service="payments",
        environment="staging",
        diagnosis_code="service_down",
        first_seen=timezone.now(),
        last_seen=timezone.now(),
    )
    original_pid = supervised_service.starts[0]
    lifecycle.reap(now=timezone.now() + timedelta(hours=1))  # the hand-off: start the run of the open incident

    # The action has stopped the old process and waits for the supervisor to bring a new one up.
    wait_for(
        lambda: (
            ActionAttempt.objects.filter(run__incident=incident, status=AttemptStatus.STARTED).exists()
            and len(supervised_service.starts) == 1
            and supervised_service._proc.poll() is not None
        ),
        timeout=60,
        what="the restart to be under way",
    )
    worker_pool.kill_hard()
    wait_for(lambda: len(supervised_service.starts) == 2, timeout=30, what="the supervisor to restart the service")
    run = HealRun.objects.get(incident=incident)
    assert run.status == RunStatus.EXECUTING

    worker_pool.ensure()
    counts = lifecycle.reap(now=timezone.now() + timedelta(hours=1))
    run = wait_for_run(incident.pk)

    assert counts["redispatched"] == 1
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    attempts = list(ActionAttempt.objects.filter(run=run).order_by("attempt").values_list("attempt", "status"))
    assert attempts == [(1, AttemptStatus.SKIPPED)]
    assert len(supervised_service.starts) == 2  # one restart, not two
    assert supervised_service.starts[1] != original_pid


def test_the_reaper_gives_up_after_its_tries_and_hands_the_run_to_humans(worker_pool):
    worker_pool.stop()  # no worker: every re-dispatch is lost, as when the queue is unreachable
    worker_pool.worker = None
    incident = Incident.objects.create(
        fingerprint="stuck",
        source="api",
        title="stuck",
        service="x",
        first_seen=timezone.now(),
        last_seen=timezone.now(),
        status="healing",
    )
    planned = HealRun.objects.create(incident=incident, status=RunStatus.PLANNED)
    later = timezone.now() + timedelta(hours=1)

    tries = [lifecycle.reap(now=later)["redispatched"] for _ in range(settings.GRACE_REAPER_MAX_TRIES)]
    final = lifecycle.reap(now=later)

    planned.refresh_from_db()
    app.control.purge()
    assert tries == [1] * settings.GRACE_REAPER_MAX_TRIES
    assert final["given_up"] == 1
    assert planned.status == RunStatus.ESCALATED
    assert "stuck in PLANNED" in planned.status_reason and "handed to humans" in planned.status_reason


def test_a_run_stuck_after_changing_something_is_rolled_back_not_abandoned(worker_pool):
    worker_pool.stop()
    worker_pool.worker = None
    incident = Incident.objects.create(
        fingerprint="stuck-verify",
        source="api",
        title="stuck",
        service="x",
        first_seen=timezone.now(),
        last_seen=timezone.now(),
        status="healing",
    )
    run = HealRun.objects.create(incident=incident, status=RunStatus.VERIFYING)
    later = timezone.now() + timedelta(hours=1)

    for _ in range(settings.GRACE_REAPER_MAX_TRIES + 1):
        lifecycle.reap(now=later)

    run.refresh_from_db()
    app.control.purge()
    assert run.status == RunStatus.ROLLING_BACK
    assert "rolling back what it changed" in run.status_reason


def test_progress_between_the_reapers_passes_keeps_the_run_from_being_given_up(worker_pool):
    worker_pool.stop()
    worker_pool.worker = None
    incident = Incident.objects.create(
        fingerprint="slow", source="api", title="slow", first_seen=timezone.now(), last_seen=timezone.now()
    )
    run = HealRun.objects.create(
        incident=incident, status=RunStatus.PLANNED, reaper_tries=settings.GRACE_REAPER_MAX_TRIES
    )
    seen = HealRun.objects.get(pk=run.pk)
    HealRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())  # the worker made progress meanwhile

    moved = transition(
        run.pk,
        RunStatus.PLANNED,
        RunStatus.ESCALATED,
        reason="stuck",
        guard={"heartbeat_at": seen.heartbeat_at, "reaper_tries": seen.reaper_tries},
    )

    app.control.purge()
    assert moved is False
    assert HealRun.objects.get(pk=run.pk).status == RunStatus.PLANNED


def test_a_finished_run_whose_outcome_hand_off_was_lost_gets_it_again(celery_worker):
    incident = Incident.objects.create(
        fingerprint="lost-outcome",
        source="api",
        title="lost",
        service="x",
        first_seen=timezone.now(),
        last_seen=timezone.now(),
        status="healing",
    )
    run = HealRun.objects.create(incident=incident, status=RunStatus.SUCCEEDED, finished_at=timezone.now())
    HealRun.objects.filter(pk=run.pk).update(finished_at=timezone.now())  # finished, its outcome never recorded

    counts = lifecycle.reap(now=timezone.now() + timedelta(minutes=10))

    assert counts["outcomes"] == 1
    wait_for(lambda: Incident.objects.get(pk=incident.pk).status == "resolved", what="the incident resolved")
    assert HealRun.objects.get(pk=run.pk).outcome_record.outcome == "succeeded"


def test_the_reaper_leaves_fresh_and_waiting_runs_alone():
    incident = Incident.objects.create(
        fingerprint="fresh", source="api", title="fresh", first_seen=timezone.now(), last_seen=timezone.now()
    )
    waiting = HealRun.objects.create(incident=incident, status=RunStatus.AWAITING_APPROVAL)

    counts = lifecycle.reap(now=timezone.now() + timedelta(days=1))

    waiting.refresh_from_db()
    assert counts["redispatched"] == 0
    assert waiting.status == RunStatus.AWAITING_APPROVAL and waiting.reaper_tries == 0
