"""Lockouts of credentials go to the audit log: the admin login's (django-axes) and the API and
webhook tokens' (``grace_site.auth_limits``). Only the attempt that starts a lockout is recorded:
the attempts refused during it are not, so a brute force cannot grow the audit log one row a try.
"""

from __future__ import annotations

from axes.signals import user_locked_out
from django.conf import settings
from django.db import transaction
from django.dispatch import receiver

from approvals import audit
from grace_site import auth_limits

ACTOR = "system:auth-limits"


@receiver(user_locked_out, dispatch_uid="grace-admin-lockout-audit")
def admin_locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    failures = getattr(request, "axes_failures_since_start", None)
    if failures != settings.AXES_FAILURE_LIMIT:
        return  # refused during a lockout already recorded (or not a counted failure)
    with transaction.atomic():
        audit.record(
            "auth.locked_out",
            actor=ACTOR,
            obj=("login", (username or "")[:64]),
            data={
                "channel": "admin",
                "username": username or "",
                "address": ip_address or "",
                "failures": failures,
                "retry_after": int(settings.AXES_COOLOFF_TIME.total_seconds()),
            },
        )


@receiver(auth_limits.locked_out, dispatch_uid="grace-token-lockout-audit")
def token_locked_out(sender, channel: str, scope: str, key: str, limit: str, retry_after: int, **kwargs) -> None:
    with transaction.atomic():
        audit.record(
            "auth.locked_out",
            actor=ACTOR,
            obj=(channel, key[:64]),
            data={"channel": channel, scope: key, "limit": limit, "retry_after": retry_after},
        )
