"""Users' API tokens: issued once, stored as a SHA-256 digest, revocable, every change audited.

GRACE keeps its own small token model rather than DRF's (which stores keys in plain text and lists them in the
admin) or django-rest-knox (login-session tokens with their own views and expiry policy): API tokens here are
long-lived credentials for scripts and integrations, handled exactly like intake channel tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import audit
from approvals.models import ApiToken

PREFIX = "gra_"
# last_used_at is refreshed at most this often (a token used in a loop writes once a minute, not per request).
TOUCH_EVERY = timedelta(minutes=1)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()


def issue(user, *, name: str, actor=None) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns it and its key, which is never available again."""
    key = PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(user=user, name=name, key_hash=digest(key), hint=key[:10])
            audit.record(
                "token.issued",
                actor=actor,
                obj=token,
                data={"user": user.get_username(), "name": name, "key": f"{key[:10]}…"},
            )
    except IntegrityError:
        raise ValueError(f"{user.get_username()} already has a token named {name!r}") from None
    return token, key


def revoke(token: ApiToken, *, actor=None) -> None:
    with transaction.atomic():
        audit.record(
            "token.revoked",
            actor=actor,
            obj=token,
            data={"user": token.user.get_username(), "name": token.name, "key": f"{token.hint}…"},
        )
        token.delete()


def authenticate(key: str):
    """The active user the key belongs to, or None."""
    key = (key or "").strip()
    if not key:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=digest(key)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
