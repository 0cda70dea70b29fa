"""Which channels an event goes to, what a webhook receives, and that notifying never breaks the caller."""

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction
from django.utils import timezone

from approvals import notifications
from approvals.models import Notification, NotificationChannel
from tests.support.race import run_together

pytestmark = pytest.mark.django_db


def test_channels_receive_the_events_they_subscribe_to(make_run, published, django_capture_on_commit_callbacks):
    run = make_run()
    failures = NotificationChannel.objects.create(name="failures", kind="webhook", url="http://hook", events=["failed"])
    everything = NotificationChannel.objects.create(name="all", kind="email", recipients=["ops@example.com"])
    NotificationChannel.objects.create(name="off", kind="webhook", url="http://off", enabled=False)

    with django_capture_on_commit_callbacks(execute=True):
        notifications.notify("run.failed", run_id=run.pk, summary="rolled back", context={})
        notifications.notify("approved", run_id=run.pk, summary="approved", context={})

    rows = sorted(Notification.objects.values_list("channel__name", "event"))
    assert rows == [("all", "approved"), ("all", "run.failed"), ("failures", "run.failed")]
    deliveries = [entry for entry in published if entry[0] == "approvals.deliver_notification"]
    assert sorted(args[0] for _, args, _ in deliveries) == sorted(Notification.objects.values_list("pk", flat=True))
    assert {queue for _, _, queue in deliveries} == {"default"}
    assert failures.pk and everything.pk


def test_the_webhook_body_is_slack_compatible(make_run):
    run = make_run()
    channel = NotificationChannel.objects.create(name="slack", kind="webhook", url="http://hook")
    notification = Notification.objects.create(
        channel=channel,
        event="approval_needed",
        run=run,
        summary="Run needs 2 approvals",
        payload={"tier": 3, "approval_request": 7},
    )

    body = notifications.webhook_body(notification)

    assert body["text"].startswith("[GRACE] approval needed: Run needs 2 approvals")
    assert "<http://127.0.0.1:8000/admin/approvals/approvalrequest/7/change/|open in GRACE>" in body["text"]
    assert body["blocks"][0]["text"]["type"] == "mrkdwn"
    assert body["grace"]["context"] == {"tier": 3, "approval_request": 7}


def test_nothing_is_queued_when_the_callers_transaction_rolls_back(make_run, published):
    run = make_run()
    NotificationChannel.objects.create(name="all", kind="webhook", url="http://hook")

    with pytest.raises(RuntimeError), transaction.atomic():
        notifications.notify("approval_needed", run_id=run.pk, summary="x", context={})
        raise RuntimeError("the caller failed")

    assert Notification.objects.count() == 0
    assert published == []


def test_a_channel_validates_its_destination_and_events():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as webhook:
        NotificationChannel(name="w", kind="webhook").full_clean()
    with pytest.raises(ValidationError) as email:
        NotificationChannel(name="e", kind="email", recipients=["not-an-address"], events=["sometimes"]).full_clean()

    assert "url" in webhook.value.message_dict
    assert "recipients" in email.value.message_dict


def test_a_notification_whose_hand_off_was_lost_is_queued_again(make_run, published, settings):
    settings.GRACE_NOTIFY_REDRIVE_AFTER = 120
    run = make_run()
    channel = NotificationChannel.objects.create(name="all", kind="webhook", url="http://hook")
    # Written, but its on-commit hand-off never reached the broker (this test's transaction never commits).
    notifications.notify("run.failed", run_id=run.pk, summary="rolled back", context={})
    lost = Notification.objects.get()
    retrying = Notification.objects.create(channel=channel, event="run.failed", summary="x", attempts=2)
    written = lost.created_at

    assert notifications.redrive(now=written + timedelta(seconds=60)) == 0  # may still be on its way
    assert notifications.redrive(now=written + timedelta(seconds=180)) == 1
    # While no worker takes it, it is queued again once per GRACE_NOTIFY_REDRIVE_AFTER, not on every pass.
    assert notifications.redrive(now=written + timedelta(seconds=240)) == 0
    assert notifications.redrive(now=written + timedelta(seconds=300)) == 1
    assert notifications.redrive(now=written + timedelta(days=2)) == 0  # too old to matter now
    deliveries = [args for name, args, _ in published if name == "approvals.deliver_notification"]
    assert deliveries == [[lost.pk], [lost.pk]]
    assert retrying.pk not in {args[0] for args in deliveries}  # its retries are already scheduled


class Hook:
    """A webhook endpoint on loopback that records what it receives, answering after ``delay`` s."""

    def __init__(self, delay: float = 0.0):
        self.received: list[bytes] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's API
                hook.received.append(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(delay)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    made: list[Hook] = []

    def make(delay: float = 0.0) -> Hook:
        made.append(Hook(delay))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.mark.django_db(transaction=True)
def test_two_deliveries_of_one_notification_send_it_once(hook):
    """A redriven hand-off beside a late original: both tasks run, one message goes out."""
    slow = hook(delay=0.3)  # long enough for the other delivery to have read the row
    channel = NotificationChannel.objects.create(name="hook", kind="webhook", url=slow.url)
    notification = Notification.objects.create(channel=channel, event="run.failed", summary="rolled back")
    results = run_together(lambda: notifications.deliver(notification.pk), 2)

    assert len(slow.received) == 1
    # The other delivery found it held ("busy") or, if it came late, already sent.
    assert sorted(results) in (["busy", "sent"], ["sent", "sent"])
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.claimed_until) == ("sent", 1, None)


@pytest.mark.django_db(transaction=True)
def test_a_delivery_that_died_holding_a_notification_lets_the_next_one_send(hook):
    """Its hold lapses (a worker killed mid-send); the redelivered task then sends."""
    endpoint = hook()
    channel = NotificationChannel.objects.create(name="hook", kind="webhook", url=endpoint.url)
    held = timezone.now() + timedelta(seconds=60)
    notification = Notification.objects.create(
        channel=channel, event="run.failed", summary="x", attempts=1, claimed_until=held
    )

    assert notifications.deliver(notification.pk) == "busy"
    Notification.objects.filter(pk=notification.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert notifications.deliver(notification.pk) == "sent"
    assert len(endpoint.received) == 1
    notification.refresh_from_db()
    assert notification.attempts == 2


HOSTILE = "disk full <!channel> <!here|here> ping <@U123> see <http://evil.example/x|the runbook> & <#C42>"


@pytest.mark.django_db(transaction=True)
def test_alert_text_reaches_slack_escaped_never_as_mentions_or_links(hook, make_run):
    endpoint = hook()
    run = make_run()
    channel = NotificationChannel.objects.create(name="slack", kind="webhook", url=endpoint.url)
    notification = Notification.objects.create(
        channel=channel,
        event="run.failed",
        run=run,
        summary=HOSTILE,
        payload={"link": f"/admin/remediation/healrun/{run.pk}/change/"},
    )

    assert notifications.deliver(notification.pk) == "sent"

    body = json.loads(endpoint.received[0])
    link = f"<http://127.0.0.1:8000/admin/remediation/healrun/{run.pk}/change/|open in GRACE>"
    for text in (body["text"], body["blocks"][0]["text"]["text"]):
        assert text == (
            "[GRACE] run.failed: disk full &lt;!channel&gt; &lt;!here|here&gt; ping &lt;@U123&gt; "
            "see &lt;http://evil.example/x|the runbook&gt; &amp; &lt;#C42&gt; " + link
        )
        # GRACE's own run link is the only markup Slack will read.
        assert text.count("<") == text.count(">") == 1
    assert body["blocks"][0]["text"]["verbatim"] is True  # no auto-linked URLs, channels or @words
    assert body["unfurl_links"] is False


def test_email_is_plain_text_with_a_one_line_subject(settings, make_run, mailoutbox):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    run = make_run()
    channel = NotificationChannel.objects.create(name="mail", kind="email", recipients=["ops@example.com"])
    summary = "db down\r\nBcc: victim@example.com\n<b>bold</b> \x1b[31mred"
    notification = Notification.objects.create(channel=channel, event="run.failed", run=run, summary=summary)

    assert notifications.deliver(notification.pk) == "sent"

    (message,) = mailoutbox
    assert message.subject == "[GRACE] run.failed: db down Bcc: victim@example.com <b>bold</b> [31mred"
    assert message.to == ["ops@example.com"] and not message.bcc
    assert message.content_subtype == "plain" and not getattr(message, "alternatives", [])
    assert message.message()["Content-Type"].startswith("text/plain")
    assert "\x1b" not in message.body
    assert "<b>bold</b>" in message.body  # shown as written, never rendered
