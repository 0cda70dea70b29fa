"""Celery tasks of governance: thin wrappers around the service modules."""

from django.conf import settings

from approvals import notifications, services
from grace_site.tasking import grace_task


@grace_task("approvals.expire_requests")
def expire_requests() -> dict:
    """Beat: expire overdue approval requests (each expiry resumes its run so the pipeline escalates it), and
    re-send lost notification deliveries (lost resumes are re-sent by the pipeline's reaper)."""
    return {"expired": services.expire_due(), "notifications_redriven": notifications.redrive()}


@grace_task(
    "approvals.deliver_notification",
    bind=True,
    retry=(notifications.TransientDeliveryError,),
    retry_backoff=settings.GRACE_NOTIFY_RETRY_BACKOFF,
    retry_backoff_max=3600,
    retry_jitter=True,
    max_retries=settings.GRACE_NOTIFY_MAX_RETRIES,
)
def deliver_notification(self, notification_id: int) -> str:
    """Send one notification; transient failures are retried with backoff, the last one is recorded."""
    try:
        return notifications.deliver(notification_id)
    except notifications.TransientDeliveryError as exc:
        if self.request.retries >= self.max_retries:
            notifications.mark_failed(notification_id, f"gave up after {self.request.retries + 1} attempt(s): {exc}")
            return "failed"
        raise
