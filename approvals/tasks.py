"""Celery tasks of governance: thin wrappers around the service modules."""

from celery import shared_task
from django.conf import settings

from approvals import audit, checkpoints, notifications, services


@shared_task(name="approvals.expire_requests", acks_late=True, soft_time_limit=60, time_limit=90)
def expire_requests() -> dict:
    """Beat: expire overdue approval requests (each expiry resumes its run so the pipeline escalates it),
    and re-send lost hand-offs: resumes of decided requests, deliveries of notifications."""
    return {
        "expired": services.expire_due(),
        "redriven": services.redrive_decided(),
        "notifications_redriven": notifications.redrive(),
    }


@shared_task(
    bind=True,
    name="approvals.deliver_notification",
    acks_late=True,
    soft_time_limit=60,
    time_limit=90,
    autoretry_for=(notifications.TransientDeliveryError,),
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


@shared_task(name="approvals.seal_audit", acks_late=True, soft_time_limit=30, time_limit=60, ignore_result=True)
def seal_audit() -> dict:
    """Beat, every second: chain the audit entries committed since the last pass, then sign a checkpoint
    of the head when one is due. Single-flight: a pass that finds another sealer at work returns."""
    sealed = audit.seal(wait=False, max_seconds=20)
    checkpoint = checkpoints.issue(only_if_due=True, wait=False)
    return {"sealed": sealed.sealed, "head": sealed.head, "busy": sealed.busy, "checkpoint": bool(checkpoint)}
