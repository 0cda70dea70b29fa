"""Notifications: a Slack-compatible webhook or an email per configured channel.

``notify`` writes one ``Notification`` row per matching channel inside the
caller's transaction and enqueues its delivery on commit. Delivery runs in a
Celery task that retries transient failures with exponential backoff; a failed
notification is recorded and never blocks or fails a run.

Summaries carry alert text, which is untrusted: in a webhook body Slack's control
characters (``&``, ``<``, ``>``) are escaped and the text is marked ``verbatim``, so
alert text can never become a mention (``<!channel>``, ``<@U123>``) or a link with
a label of its choosing (``<http://evil|click>``); the only link is GRACE's own.
Email is plain text, its subject one line.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from approvals.choices import ChannelKind, DeliveryStatus
from approvals.models import Notification, NotificationChannel
from grace_site import handoff
from grace_site.masking import scrub

logger = logging.getLogger(__name__)

DELIVER_TASK = "approvals.deliver_notification"
# How long a delivery holds its notification: past the delivery task's hard time limit (90 s).
CLAIM = timedelta(seconds=120)


class TransientDeliveryError(Exception):
    """A delivery failure a later attempt may fix (timeout, 5xx, 429, SMTP down)."""


class PermanentDeliveryError(Exception):
    """A delivery failure no retry fixes (4xx from the webhook, bad address)."""


def _enqueue(notification_id: int) -> None:
    handoff.send(DELIVER_TASK, notification_id, queue=settings.GRACE_NOTIFY_QUEUE, ignore_result=False)


def wants(channel: NotificationChannel, event: str) -> bool:
    """Whether the channel subscribes to ``event``; "run.failed" matches a subscription to "failed"."""
    return not channel.events or event in channel.events or event.rsplit(".", 1)[-1] in channel.events


def notify(
    event: str, *, run_id: int | None, summary: str, context: dict, channel_ids: list[int] | None = None
) -> None:
    """Queue ``event`` for every enabled channel that wants it (or exactly ``channel_ids``); delivered after commit.

    Never raises for a notification problem: a database error here is logged and
    the caller's work goes on (the savepoint keeps the caller's transaction usable).
    """
    try:
        with transaction.atomic():
            if channel_ids is not None:
                channels = list(NotificationChannel.objects.filter(pk__in=channel_ids))
            else:
                channels = [c for c in NotificationChannel.objects.filter(enabled=True) if wants(c, event)]
            payload = json.loads(json.dumps(context or {}, cls=DjangoJSONEncoder))
            for channel in channels:
                notification = Notification.objects.create(
                    channel=channel, event=event, run_id=run_id, summary=summary[:500], payload=payload
                )
                handoff.send_on_commit(
                    DELIVER_TASK, notification.pk, queue=settings.GRACE_NOTIFY_QUEUE, ignore_result=False
                )
    except DatabaseError:
        logger.exception("could not queue notification %r for run %s", event, run_id)


def _link(notification: Notification) -> str:
    """Where a person acts on it: the link the notifying code passed in (``context["link"]``, a path on GRACE),
    else the approval request's review page."""
    path = notification.payload.get("link") if isinstance(notification.payload, dict) else None
    if not path:
        request_id = notification.payload.get("approval_request") if isinstance(notification.payload, dict) else None
        if request_id is None:
            return ""
        path = reverse("admin:approvals_approvalrequest_change", args=[request_id])
    return f"{settings.GRACE_BASE_URL}{path}" if str(path).startswith("/") else ""


def slack_escape(text: str) -> str:
    """``text`` shown as written in Slack: its three control characters escaped, as Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_body(notification: Notification) -> dict:
    """Slack-compatible JSON (``text`` + blocks), with GRACE's own fields under ``grace``.

    Alert text is escaped; ``verbatim`` stops Slack from turning bare URLs, channel names and
    ``@`` words into links and mentions. The run link is the one piece of markup, and GRACE's own.
    """
    link = _link(notification)
    text = slack_escape(f"[GRACE] {notification.event.replace('_', ' ')}: {notification.summary}")
    if link:
        text += f" <{slack_escape(link)}|open in GRACE>"
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}],
        "unfurl_links": False,
        "unfurl_media": False,
        "grace": {
            "event": notification.event,
            "run_id": notification.run_id,
            "summary": notification.summary,
            "context": notification.payload,
            "url": link,
        },
    }


def _send_webhook(notification: Notification) -> None:
    try:
        response = requests.post(
            notification.channel.url,
            json=webhook_body(notification),
            timeout=settings.GRACE_NOTIFY_TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        # The error quotes the URL (or its path): the credential is masked before it is stored or logged.
        raise TransientDeliveryError(f"webhook unreachable: {scrub(str(exc), [notification.channel.url])}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientDeliveryError(f"webhook answered HTTP {response.status_code}")
    if response.status_code >= 300:
        answer = scrub(response.text[:200], [notification.channel.url])
        raise PermanentDeliveryError(f"webhook answered HTTP {response.status_code}: {answer}")


# Control characters other than tab and newline: no terminal escapes or stray bytes in a plain-text mail.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _plain(text: str) -> str:
    return _CONTROL.sub(" ", text)


def _send_email(notification: Notification) -> None:
    body = "\n".join(
        [
            _plain(notification.summary),
            "",
            _link(notification),
            "",
            _plain(json.dumps(notification.payload, indent=2, sort_keys=True)[:20000]),
        ]
    )
    # One line: a newline in alert text would otherwise make Django refuse the header.
    subject = " ".join(_plain(f"[GRACE] {notification.event.replace('_', ' ')}: {notification.summary}").split())
    try:
        send_mail(
            subject=subject[:200],
            message=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=list(notification.channel.recipients),
        )
    except OSError as exc:  # smtplib.SMTPException is an OSError: connection, refusal, timeout
        raise TransientDeliveryError(f"email not sent: {exc}") from exc


def deliver(notification_id: int) -> str:
    """Send one queued notification. Returns its new status; raises TransientDeliveryError to be retried.

    Returns "busy" when another delivery of the same notification holds it (a redriven hand-off beside
    a late original): only the holder sends, so a notification goes out once.
    """
    notification = Notification.objects.select_related("channel").filter(pk=notification_id).first()
    if notification is None or notification.status != DeliveryStatus.QUEUED:
        return notification.status if notification else "missing"
    now = timezone.now()
    claimed = (
        Notification.objects.filter(pk=notification_id, status=DeliveryStatus.QUEUED)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(attempts=F("attempts") + 1, claimed_until=now + CLAIM)
    )
    if not claimed:
        return "busy"
    sender = _send_webhook if notification.channel.kind == ChannelKind.WEBHOOK else _send_email
    try:
        sender(notification)
    except TransientDeliveryError as exc:
        # Released for the retry Celery schedules.
        Notification.objects.filter(pk=notification_id).update(last_error=str(exc)[:2000], claimed_until=None)
        raise
    except PermanentDeliveryError as exc:
        mark_failed(notification_id, str(exc))
        return DeliveryStatus.FAILED
    Notification.objects.filter(pk=notification_id, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.SENT, sent_at=timezone.now(), last_error="", claimed_until=None
    )
    return DeliveryStatus.SENT


def redrive(now=None) -> int:
    """Queue again the deliveries never attempted since they were written: their hand-off to the
    broker was lost (it was down at commit, or the process died right after).

    Only notifications from the last day, unattempted ``GRACE_NOTIFY_REDRIVE_AFTER`` seconds after
    they were written (or last redriven); one being retried has attempts and its own schedule.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.GRACE_NOTIFY_REDRIVE_AFTER)
    ids = list(
        Notification.objects.filter(
            status=DeliveryStatus.QUEUED,
            attempts=0,
            created_at__lte=cutoff,
            created_at__gte=now - timedelta(days=1),
        )
        .filter(Q(redriven_at__isnull=True) | Q(redriven_at__lte=cutoff))
        .values_list("pk", flat=True)
    )
    Notification.objects.filter(pk__in=ids).update(redriven_at=now)
    for notification_id in ids:
        _enqueue(notification_id)
    return len(ids)


def mark_failed(notification_id: int, error: str) -> None:
    Notification.objects.filter(pk=notification_id, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.FAILED, last_error=error[:2000]
    )
    logger.warning("notification %s failed for good: %s", notification_id, error)
