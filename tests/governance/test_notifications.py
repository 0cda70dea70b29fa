"""Which channels an event goes to, what a webhook receives, and that notifying never breaks the caller."""

import pytest
from django.db import transaction

from approvals import notifications
from approvals.models import Notification, NotificationChannel

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
        channel=channel, event="approval_needed", run=run, summary="Run needs 2 approvals", payload={"tier": 3}
    )

    body = notifications.webhook_body(notification)

    assert body["text"].startswith("[GRACE] approval needed: Run needs 2 approvals")
    assert f"/admin/remediation/healrun/{run.pk}/change/" in body["text"]
    assert body["blocks"][0]["text"]["type"] == "mrkdwn"
    assert body["grace"]["context"] == {"tier": 3}


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
