"""Governance with real processes: a Celery worker delivering notifications over real HTTP and
email, the expiry task, and concurrent approvals resuming a run exactly once."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from celery import current_app
from django.db import connections
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalRequest, Notification, NotificationChannel
from remediation.models import HealRun
from tests.governance.conftest import CONTEXT, resumes
from tests.support.processes import start_worker
from tests.support.runs import wait_for as poll_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mail")


NOTIFY_QUEUE = f"notify-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def governance_worker(django_db_setup, django_db_blocker, tmp_path_factory, mail_dir):
    """A worker of its own for notifications, with quick retries and a file email backend.

    Deliveries go to a private queue (GRACE_NOTIFY_QUEUE), so another test worker on
    "default" cannot take them with its own retry settings.
    """
    with django_db_blocker.unblock():
        worker, name = start_worker(
            tmp_path_factory.mktemp("governance-worker"),
            queues=NOTIFY_QUEUE,
            GRACE_NOTIFY_RETRY_BACKOFF="1",
            GRACE_NOTIFY_MAX_RETRIES="3",
            GRACE_NOTIFY_TIMEOUT="2",
            GRACE_EMAIL_BACKEND="file",
            GRACE_EMAIL_FILE_PATH=str(mail_dir),
        )
    yield worker
    worker.stop()


@pytest.fixture
def notify_worker(governance_worker, settings):
    settings.GRACE_NOTIFY_QUEUE = NOTIFY_QUEUE
    return governance_worker


class Receiver:
    """A real HTTP endpoint answering a scripted list of status codes (then 200)."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's API
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(statuses=()):
        made.append(Receiver(list(statuses)))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition", worker=None):
    return poll_until(
        predicate,
        timeout=timeout,
        what=what,
        fresh_reads=True,
        detail=(lambda: f"worker log:\n{worker.log()}") if worker else None,
    )


def _open(run, tier=2):
    return services.open_request(
        run_id=run.pk, plan_hash=run.plan_hash, tier=tier, requested_by_id=None, context=CONTEXT
    )


def test_approval_needed_reaches_a_webhook_after_a_retry_and_an_email(notify_worker, make_run, receiver, mail_dir):
    hook = receiver([503])  # first delivery fails, the retry succeeds
    NotificationChannel.objects.create(name="slack", kind="webhook", url=hook.url, events=["approval_needed"])
    NotificationChannel.objects.create(name="oncall", kind="email", recipients=["oncall@example.com"])
    run = make_run()

    _open(run)

    sent = _wait_for(
        lambda: Notification.objects.filter(status="sent").count() == 2,
        what="both notifications to be sent",
        worker=notify_worker,
    )
    assert sent
    hooked = Notification.objects.get(channel__name="slack")
    assert hooked.attempts == 2
    assert len(hook.bodies) == 2
    assert hook.bodies[-1]["text"].startswith("[GRACE] approval needed: Run #")
    assert hook.bodies[-1]["grace"]["run_id"] == run.pk
    mail = "".join(path.read_text() for path in mail_dir.iterdir())
    assert "oncall@example.com" in mail and f"Run #{run.pk} needs 1 approval(s)" in mail


def test_a_failing_notification_never_blocks_the_approval(notify_worker, make_run, receiver, operator):
    hook = receiver([404])  # then 200: only the approval_needed notification may take the 404
    NotificationChannel.objects.create(name="broken", kind="webhook", url=hook.url, events=["approval_needed"])
    run = make_run()
    request = _open(run)

    decided = services.decide(request.pk, user=operator, approve=True, reason="go ahead")

    assert decided.status == "approved"
    failed = _wait_for(
        lambda: Notification.objects.filter(event="approval_needed", status="failed").first(),
        what="failure",
        worker=notify_worker,
    )
    assert "HTTP 404" in failed.last_error
    assert failed.attempts == 1  # a 4xx is not retried


def test_an_unreachable_webhook_is_retried_then_given_up(notify_worker, make_run):
    NotificationChannel.objects.create(name="nowhere", kind="webhook", url="http://127.0.0.1:9/hook")
    run = make_run()

    _open(run)

    failed = _wait_for(lambda: Notification.objects.filter(status="failed").first(), timeout=90, what="the last retry")
    assert failed.attempts == 4  # first try + GRACE_NOTIFY_MAX_RETRIES=3
    assert "gave up after 4 attempt(s)" in failed.last_error


def test_the_expiry_task_escalates_the_run_through_the_pipeline(celery_worker, make_run, receiver):
    hook = receiver()
    NotificationChannel.objects.create(
        name="escalations", kind="webhook", url=hook.url, events=["expired", "escalated"]
    )
    run = make_run()
    request = _open(run)
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    current_app.send_task("approvals.expire_requests", queue="default")

    expired = _wait_for(lambda: HealRun.objects.filter(pk=run.pk, status="EXPIRED").first(), what="the run expired")
    assert "escalated" in expired.status_reason
    assert ApprovalRequest.objects.get(pk=request.pk).status == "expired"
    _wait_for(lambda: len(hook.bodies) == 2, what="the expiry and escalation webhooks")
    assert sorted(body["grace"]["event"] for body in hook.bodies) == ["expired", "run.escalated"]
    assert {body["grace"]["run_id"] for body in hook.bodies} == {run.pk}


@pytest.mark.parametrize("tier", [2, 3])
def test_racing_approvals_resume_the_run_exactly_once(make_run, make_user, published, tier):
    approvers = [make_user(f"racer-{i}", "GRACE senior approvers") for i in range(3)]
    run = make_run()
    request = _open(run, tier=tier)
    start = threading.Barrier(len(approvers))
    outcomes: list[str] = []

    def approve(user):
        try:
            start.wait()
            services.decide(request.pk, user=user, approve=True, reason="race")
            outcomes.append("ok")
        except services.Conflict:
            outcomes.append("conflict")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=approve, args=(user,)) for user in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    request.refresh_from_db()
    assert request.status == "approved"
    needed = services.required_approvals(tier)
    assert sorted(outcomes) == ["conflict"] * (3 - needed) + ["ok"] * needed
    assert request.decisions.count() == needed
    assert resumes(published) == [("remediation.resume_run", [run.pk], "heal.local")]
