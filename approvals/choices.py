from django.db import models


class RequestStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    VOID = "void", "void: plan changed or run ended"


# A request in one of these states can never be decided again.


class Effect(models.TextChoices):
    ALLOW = "allow", "allow"
    DENY = "deny", "deny (a deny with a time window is a blackout)"
    REQUIRE_TIER = "require_tier", "require at least tier N"
    LIMIT = "limit", "limit actions per target per hour"


class ChannelKind(models.TextChoices):
    WEBHOOK = "webhook", "webhook (Slack-compatible JSON)"
    EMAIL = "email", "email"


class NotificationEvent(models.TextChoices):
    """What a channel can subscribe to. The pipeline's "run.<kind>" events match "<kind>"."""

    APPROVAL_NEEDED = "approval_needed", "approval needed"
    APPROVED = "approved", "approval granted"
    REJECTED = "rejected", "approval rejected"
    EXPIRED = "expired", "approval expired (no decision in time)"
    ESCALATED = "escalated", "run escalated to humans (rejected, expired, blocked)"
    FAILED = "failed", "run failed or rolled back"
    TEST = "test", "test message"


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
