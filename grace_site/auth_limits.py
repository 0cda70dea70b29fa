"""Brute-force limits on credentials: failed attempts per client address and per account.

Any authentication that takes a secret uses three calls around its own check::

    auth_limits.check(request, account=None, channel="api-token")     # raises Locked (429) when spent
    ...compare the credential...
    auth_limits.failed(request, account=None, channel="api-token")    # a wrong credential
    auth_limits.succeeded(request, account="alice", channel="api-token")

or ``with auth_limits.guarded(request, channel=...)`` around a check that raises DRF's
``AuthenticationFailed``. Failures are counted in moving windows on Redis (limits; the keys expire
with their windows): ``GRACE_AUTH_FAILURE_LIMIT`` per client address and per account. ``account``
is whatever the credential names before it is verified (a user name, a token's public id); a
credential that names nothing (a bare shared token) is limited per address only, so nobody can
lock a shared integration out for everyone. Once a limit is spent every attempt is refused, the
right credential too, until the window frees a slot: ``Locked`` is DRF's ``Throttled`` (429 with
``Retry-After``). The attempt that spends a limit sends ``locked_out``, which the audit log
records (approvals connects to it: grace_site imports no app).

The admin login uses django-axes (``AxesHandler`` here: its cache handler on the same Redis,
failing open like this module) with the same client address.

Redis unavailable: the limits fail open with a warning (like the anonymous throttle), so intake
and operators are not locked out by an outage; the credential is still checked.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from axes.handlers.cache import AxesCacheHandler
from django.conf import settings
from django.dispatch import Signal
from django.shortcuts import render
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.strategies import MovingWindowRateLimiter
from rest_framework.exceptions import AuthenticationFailed, Throttled

from grace_site import redis as grace_redis

log = logging.getLogger(__name__)

KEY_PREFIX = "grace:auth"
STORE_ERRORS = (redis.RedisError, StorageError)

# Sent by the failure that spends a limit (not by the attempts refused after it):
# channel, scope ("address" | "account"), key, limit, retry_after, request.
locked_out = Signal()


class Locked(Throttled):
    default_detail = "Too many failed authentication attempts."

    def __init__(self, wait: int, scope: str):
        super().__init__(wait=wait, detail=f"Too many failed authentication attempts from this {scope}.")
        self.scope = scope


def client_address(request) -> str:
    """The client's address: ``REMOTE_ADDR``, or behind ``GRACE_TRUSTED_PROXIES`` proxies the entry
    of ``X-Forwarded-For`` the outermost trusted proxy wrote (entries a client sends are ignored)."""
    meta = request.META
    hops = settings.GRACE_TRUSTED_PROXIES
    if hops:
        forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return meta.get("REMOTE_ADDR", "") or "unknown"


def limit() -> RateLimitItem:
    return parse(settings.GRACE_AUTH_FAILURE_LIMIT)


def _limiter() -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(grace_redis.rate_limit_storage(key_prefix=KEY_PREFIX, wrap_exceptions=True))


def _keys(request, account: str | None) -> list[tuple[str, str]]:
    keys = [("address", client_address(request))]
    if account:
        keys.append(("account", account))
    return keys


def _retry_after(limiter: MovingWindowRateLimiter, item: RateLimitItem, *ids: str) -> int:
    reset_at, _ = limiter.get_window_stats(item, *ids)
    return max(1, math.ceil(reset_at - time.time()))


def check(request, account: str | None = None, *, channel: str) -> None:
    """Raise ``Locked`` when the address or the account has no failed attempt left in its window."""
    item, limiter = limit(), _limiter()
    try:
        for scope, key in _keys(request, account):
            if not limiter.test(item, channel, scope, key):
                raise Locked(_retry_after(limiter, item, channel, scope, key), scope)
    except STORE_ERRORS as exc:
        log.warning("authentication limits unavailable, not enforced: %s", exc)


def failed(request, account: str | None = None, *, channel: str) -> None:
    """Count a wrong credential against the address (and the account); the one that spends a limit
    sends ``locked_out``."""
    item, limiter = limit(), _limiter()
    try:
        for scope, key in _keys(request, account):
            if limiter.hit(item, channel, scope, key) and not limiter.test(item, channel, scope, key):
                retry_after = _retry_after(limiter, item, channel, scope, key)
                locked_out.send(
                    __name__,
                    channel=channel,
                    scope=scope,
                    key=key,
                    limit=str(item),
                    retry_after=retry_after,
                    request=request,
                )
    except STORE_ERRORS as exc:
        log.warning("authentication limits unavailable, failure not counted: %s", exc)


def succeeded(request, account: str | None = None, *, channel: str) -> None:
    """A right credential: the account's failures are forgotten (the address's are not, so one valid
    credential cannot buy an address more guesses at others)."""
    if not account:
        return
    try:
        _limiter().clear(limit(), channel, "account", account)
    except STORE_ERRORS as exc:
        log.warning("authentication limits unavailable: %s", exc)


@contextmanager
def guarded(request, *, channel: str, account: str | None = None) -> Iterator[None]:
    """``check`` before the block, ``failed`` when it raises ``AuthenticationFailed``, else ``succeeded``."""
    check(request, account, channel=channel)
    try:
        yield
    except AuthenticationFailed:
        failed(request, account, channel=channel)
        raise
    succeeded(request, account, channel=channel)


# --- the admin login (django-axes) -------------------------------------------------------------


class AxesHandler(AxesCacheHandler):
    """django-axes' cache handler (Redis, keys expiring with the cool-off), failing open when Redis
    is unreachable: the password is still checked, the limit is not (a warning is logged)."""

    def is_locked(self, request, credentials=None) -> bool:
        try:
            return super().is_locked(request, credentials)
        except STORE_ERRORS as exc:
            log.warning("login limits unavailable, not enforced: %s", exc)
            return False

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs):
        try:
            return super().user_login_failed(sender, credentials, request, **kwargs)
        except STORE_ERRORS as exc:
            log.warning("login limits unavailable, failure not counted: %s", exc)

    def user_logged_in(self, sender, request, user, **kwargs):
        try:
            return super().user_logged_in(sender, request, user, **kwargs)
        except STORE_ERRORS as exc:
            log.warning("login limits unavailable: %s", exc)


def admin_lockout_response(request, response=None, credentials=None):
    """The admin login's answer while locked out: a page that says so, 429 with ``Retry-After``."""
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    page = render(
        request,
        "admin/login_locked.html",
        {"minutes": max(1, math.ceil(seconds / 60)), "title": "Too many failed logins", "site_header": "GRACE"},
        status=429,
    )
    page["Retry-After"] = str(seconds)
    return page
