"""Celery tasks of governance: thin wrappers around the service modules."""

from django.conf import settings

from approvals import audit, checkpoints, notifications, services
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


# No retries: the next pass, a second later, picks up where a failed one stopped.
@grace_task("approvals.seal_audit", result=False, retry=(), soft_time_limit=30, time_limit=60)
def seal_audit() -> dict:
    """Beat, every second: chain the audit entries committed since the last pass, then sign a checkpoint
    of the head when one is due. Single-flight: a pass that finds another sealer at work returns."""
    sealed = audit.seal(wait=False, max_seconds=20)
    checkpoint = checkpoints.issue(only_if_due=True, wait=False)
    return {"sealed": sealed.sealed, "head": sealed.head, "busy": sealed.busy, "checkpoint": bool(checkpoint)}
