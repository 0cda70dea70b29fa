"""Credentials (a webhook channel's URL, passwords in URLs, tokens) are masked wherever they are shown or
recorded, and used in full only to deliver."""

import io
import json
import logging

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command

from approvals import audit, notifications
from approvals.models import AuditEvent, Notification, NotificationChannel
from grace_site import masking
from incidents.models import SweepTarget
from incidents.sweeps import check_http
from tests.governance.test_notifications import Hook

pytestmark = pytest.mark.django_db

SECRET = "B0123/XyZsEcReTsEcReT42"
SLACK = f"https://hooks.slack.com/services/T0123/{SECRET}"


def _add_channel(client, url: str) -> NotificationChannel:
    response = client.post(
        "/admin/approvals/notificationchannel/add/",
        {"name": "slack", "kind": "webhook", "url": url, "recipients": "[]", "events": "[]", "enabled": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    return NotificationChannel.objects.get(name="slack")


def test_a_channel_url_is_kept_for_delivery_and_masked_in_the_audit_log_and_the_api(client, api_client, admin_user):
    client.force_login(admin_user)
    api_client.force_authenticate(admin_user)

    channel = _add_channel(client, SLACK)

    assert channel.url == SLACK  # the delivery needs it whole
    event = AuditEvent.objects.get(action="config.created", object_type="approvals.notificationchannel")
    assert SECRET not in json.dumps(event.data)
    assert event.data["changes"]["url"]["after"] == masking.mask_url(SLACK)
    assert event.data["changes"]["url"]["after"].startswith("https://hooks.slack.com/****")
    listed = api_client.get("/api/audit/", {"object_type": "approvals.notificationchannel"})
    assert listed.status_code == 200
    assert SECRET not in listed.content.decode() and "hooks.slack.com/****" in listed.content.decode()


def test_audit_rows_written_before_masking_are_masked_when_read_and_the_chain_still_verifies(
    client, api_client, admin_user
):
    audit.record(
        "config.changed",
        actor="old",
        obj=("approvals.notificationchannel", "1"),
        data={"fields": {"name": "slack", "url": SLACK}},
    )
    audit.record("config.created", actor="old", data={"password": "hunter2", "dsn_url": "postgres://a:hunter2@db/x"})
    client.force_login(admin_user)
    api_client.force_authenticate(admin_user)

    api = api_client.get("/api/audit/").content.decode()
    pages = [client.get(f"/admin/approvals/auditevent/{event.pk}/change/") for event in AuditEvent.objects.all()]

    for text in (api, *(page.content.decode() for page in pages)):
        assert SECRET not in text and "hunter2" not in text
    assert all(page.status_code == 200 for page in pages)
    assert "postgres://a:****@db/x" in api
    call_command("verify_audit")  # the stored rows are untouched


def test_the_admin_never_renders_a_channel_url_and_an_empty_field_keeps_it(client, admin_user, make_user):
    client.force_login(admin_user)
    channel = _add_channel(client, SLACK)

    listing = client.get("/admin/approvals/notificationchannel/").content.decode()
    edit = client.get(f"/admin/approvals/notificationchannel/{channel.pk}/change/").content.decode()
    kept = client.post(
        f"/admin/approvals/notificationchannel/{channel.pk}/change/",
        {"name": "slack-ops", "kind": "webhook", "url": "", "recipients": "[]", "events": "[]", "enabled": "on"},
    )
    viewer = make_user("viewer-1")
    viewer.user_permissions.add(Permission.objects.get(codename="view_notificationchannel"))
    client.force_login(viewer)
    view_only = client.get(f"/admin/approvals/notificationchannel/{channel.pk}/change/")

    assert SECRET not in listing and "hooks.slack.com/****" in listing
    assert SECRET not in edit and 'type="password"' in edit
    assert kept.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.url) == ("slack-ops", SLACK)
    assert view_only.status_code == 200
    assert SECRET not in view_only.content.decode() and "hooks.slack.com/****" in view_only.content.decode()


def test_a_failed_delivery_records_and_logs_its_error_without_the_url(client, admin_user, caplog):
    url = f"http://127.0.0.1:1/services/T0123/{SECRET}"  # nothing listens on port 1
    channel = NotificationChannel.objects.create(name="down", kind="webhook", url=url)
    notification = Notification.objects.create(channel=channel, event="run.failed", summary="x")

    with pytest.raises(notifications.TransientDeliveryError) as exc:
        notifications.deliver(notification.pk)
    notifications.mark_failed(notification.pk, str(exc.value))
    client.force_login(admin_user)
    listing = client.get("/admin/approvals/notification/").content.decode()

    notification.refresh_from_db()
    assert "webhook unreachable" in notification.last_error
    for text in (str(exc.value), notification.last_error, caplog.text, listing):
        assert SECRET not in text
    assert exc.value.__cause__ is None  # the client's error, which quotes the URL, is not chained along


@pytest.mark.django_db(transaction=True)
def test_the_delivery_itself_uses_the_whole_url():
    hook = Hook()
    try:
        channel = NotificationChannel.objects.create(name="hook", kind="webhook", url=f"{hook.url}/{SECRET}")
        notification = Notification.objects.create(channel=channel, event="test", summary="hello")

        assert notifications.deliver(notification.pk) == "sent"
        assert len(hook.received) == 1
    finally:
        hook.close()


def test_log_records_are_masked_on_their_way_out():
    # The console handler configured by settings.LOGGING, writing into a buffer for the test.
    (console,) = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and h.filters]
    buffer = io.StringIO()
    previous = console.setStream(buffer)
    logger = logging.getLogger("grace.test.masking")

    logger.warning("cannot reach postgres://orders:hunter2@db:5432/orders")
    logger.warning("posting to %s failed", SLACK)
    logger.warning("header Authorization: Token 0123456789abcdef0123456789abcdef")
    try:
        raise RuntimeError('{"password": "hunter2"}')
    except RuntimeError:
        logger.exception("boom")
    finally:
        console.setStream(previous)

    err = buffer.getvalue()
    assert "hunter2" not in err and SECRET not in err and "0123456789abcdef0123456789abcdef" not in err
    assert "postgres://orders:****@db:5432/orders" in err and "hooks.slack.com/****" in err


def test_a_password_in_a_sweep_url_reaches_neither_incidents_nor_the_admin_list(client, admin_user):
    target = SweepTarget.objects.create(name="web", kind="http", location="http://ops:hunter2@127.0.0.1:1/health")
    client.force_login(admin_user)

    findings = check_http(target)
    listing = client.get("/admin/incidents/sweeptarget/").content.decode()

    text = json.dumps([finding.__dict__ for finding in findings], default=str)
    assert "hunter2" not in text and "http://ops:****@127.0.0.1:1/health" in text
    assert "hunter2" not in listing and "http://ops:****@127.0.0.1:1/health" in listing


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (SLACK, "https://hooks.slack.com/"),
        ("https://outlook.office.com:8443/webhookb2/abc", "https://outlook.office.com:8443/"),
        ("not a url", ""),
    ],
)
def test_a_credential_url_keeps_only_its_scheme_and_host(url, shown):
    masked = masking.mask_url(url)

    assert masked.startswith(f"{shown}****") and masked.endswith(f"(sha256:{masking.fingerprint(url)})")
    assert masking.mask_url(url) == masked  # the same value, the same fingerprint: a change shows


def test_a_url_keeps_its_host_and_path_but_not_its_password_or_secret_parameters():
    assert masking.redact_url("postgres://app:pw@db:5432/orders?sslmode=require") == (
        "postgres://app:****@db:5432/orders?sslmode=require"
    )
    assert masking.redact_url("https://s3/x?X-Amz-Signature=abc&part=1&token=t") == (
        "https://s3/x?X-Amz-Signature=****&part=1&token=****"
    )
    assert masking.redact_url("http://127.0.0.1:8000/api/health/") == "http://127.0.0.1:8000/api/health/"
