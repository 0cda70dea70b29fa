"""Resilience around every action call: retries, circuit breakers and rate limits.

- Retries (tenacity): only errors classified transient (``ActionError.transient``),
  exponential backoff with jitter, bounded by ``GRACE_RETRY_ATTEMPTS`` and
  ``GRACE_RETRY_MAX_SECONDS``. Permanent errors are raised at once.
- A circuit breaker per (action, target) (pybreaker with ``CircuitRedisStorage``), so
  every worker shares it. One guarded call, retries included, counts as one success
  or one failure; ``ActionRefused`` (nothing was attempted) is never a failure.
  ``GRACE_BREAKER_FAIL_MAX`` consecutive failures open it for
  ``GRACE_BREAKER_RESET_TIMEOUT`` seconds; then one trial call is let through.
- A rate limit per (action, target) (limits, moving window on Redis): ``GRACE_RATE_LIMIT``,
  overridden per action by ``GRACE_RATE_LIMITS``. Every guarded call spends one hit.

Fail closed: when Redis cannot be read before a call, the call is ``Blocked`` with
reason "resilience state unavailable: ..." and the action does not run. Once the
action has run, a Redis error while recording the outcome is logged by pybreaker
and does not turn a finished action into a failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import pybreaker
import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from approvals import audit
from remediation.actions.base import Action, ActionError, ActionRefused

log = logging.getLogger(__name__)

PREFIX = "grace:resilience"
# Hashes of the (action, target) pairs seen, so the state can be listed without SCAN.
BREAKERS_KEY = f"{PREFIX}:breakers"
LIMITS_KEY = f"{PREFIX}:limits"
REDIS_ERRORS = (redis.RedisError, StorageError)


class Blocked(Exception):
    """The call was not made: its breaker is open, its rate limit is spent, or that state cannot be read."""

    def __init__(self, reason: str, *, kind: str, reset_at: datetime | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "breaker" | "rate_limit"
        self.reset_at = reset_at


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)


@lru_cache(maxsize=4)
def _limiter(url: str) -> MovingWindowRateLimiter:
    storage = RedisStorage(
        url, key_prefix=f"{PREFIX}:limit", wrap_exceptions=True, socket_connect_timeout=1, socket_timeout=2
    )
    return MovingWindowRateLimiter(storage)


def _redis() -> redis.Redis:
    return _client(settings.REDIS_URL)


def _key(action_name: str, target: str) -> str:
    return json.dumps([action_name, target])


def _namespace(action_name: str, target: str) -> str:
    return f"{PREFIX}:breaker:{_key(action_name, target)}"


def _breaker_keys(namespace: str) -> list[str]:
    return [f"{namespace}:pybreaker:{name}" for name in ("state", "fail_counter", "opened_at")]


def _breaker(action_name: str, target: str) -> pybreaker.CircuitBreaker:
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED,
        _redis(),
        namespace=_namespace(action_name, target),
        fallback_circuit_state=pybreaker.STATE_OPEN,
    )
    return pybreaker.CircuitBreaker(
        fail_max=settings.GRACE_BREAKER_FAIL_MAX,
        reset_timeout=settings.GRACE_BREAKER_RESET_TIMEOUT,
        exclude=[ActionRefused],
        state_storage=storage,
        throw_new_error_on_trip=False,  # the caller sees the action's own error
        name=_key(action_name, target),
    )


def _breaker_state(action_name: str, target: str) -> tuple[str, int, datetime | None, datetime | None]:
    """``(state, failures, opened_at, resets_at)`` read straight from Redis (raises on Redis errors)."""
    state, failures, opened = _redis().mget(_breaker_keys(_namespace(action_name, target)))
    opened_at = datetime.fromtimestamp(int(opened), UTC) if opened else None
    resets_at = opened_at + timedelta(seconds=settings.GRACE_BREAKER_RESET_TIMEOUT) if opened_at else None
    return (state or b"closed").decode(), int(failures or 0), opened_at, resets_at


def rate_limit_for(action_name: str) -> RateLimitItem:
    name = "GRACE_RATE_LIMITS" if action_name in settings.GRACE_RATE_LIMITS else "GRACE_RATE_LIMIT"
    raw = settings.GRACE_RATE_LIMITS.get(action_name, settings.GRACE_RATE_LIMIT)
    try:
        return parse(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must look like '30/hour' or '5 per minute', got {raw!r}") from None


def _retrying() -> Retrying:
    initial = settings.GRACE_RETRY_WAIT_INITIAL
    return Retrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, ActionError) and exc.transient),
        stop=stop_after_attempt(settings.GRACE_RETRY_ATTEMPTS) | stop_after_delay(settings.GRACE_RETRY_MAX_SECONDS),
        wait=wait_exponential_jitter(multiplier=initial, max=settings.GRACE_RETRY_WAIT_MAX, jitter=initial),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )


def _check_breaker(action_name: str, target: str) -> str:
    state, failures, _, resets_at = _breaker_state(action_name, target)
    if state == pybreaker.STATE_OPEN and (resets_at is None or datetime.now(UTC) < resets_at):
        raise Blocked(
            f"circuit breaker open for {action_name} on {target} after {failures} consecutive failures"
            + (f"; it lets a trial call through at {resets_at.isoformat()}" if resets_at else ""),
            kind="breaker",
            reset_at=resets_at,
        )
    return state


def _spend_rate_limit(action_name: str, target: str) -> None:
    item = rate_limit_for(action_name)
    limiter = _limiter(settings.REDIS_URL)
    _redis().hset(LIMITS_KEY, _key(action_name, target), str(item))
    if not limiter.hit(item, action_name, target):
        reset_time, _ = limiter.get_window_stats(item, action_name, target)
        reset_at = datetime.fromtimestamp(reset_time, UTC)
        raise Blocked(
            f"rate limit of {item} spent for {action_name} on {target}; next call allowed at {reset_at.isoformat()}",
            kind="rate_limit",
            reset_at=reset_at,
        )


def run_guarded(action: Action, params: dict, fn: Callable[[], dict]) -> dict:
    """Call ``fn`` (the action on ``params``) through the rate limit, the breaker and retries.

    Raises ``Blocked`` without calling ``fn`` when the breaker is open, the rate limit is
    spent or their state cannot be read; otherwise returns ``fn``'s result or re-raises its
    final error (after retries of transient errors).
    """
    target = action.target(params)
    stage = "breaker"
    try:
        breaker = _breaker(action.name, target)
        _redis().hset(BREAKERS_KEY, _key(action.name, target), "")
        before = _check_breaker(action.name, target)
        stage = "rate_limit"
        _spend_rate_limit(action.name, target)
    except REDIS_ERRORS as exc:
        raise Blocked(f"resilience state unavailable: {exc}", kind=stage) from exc
    try:
        return breaker.call(_retrying(), fn)
    except pybreaker.CircuitBreakerError as exc:  # opened by another worker since the check
        raise Blocked(f"circuit breaker open for {action.name} on {target}: {exc}", kind="breaker") from exc
    except Exception as exc:
        _audit_if_opened(action.name, target, before, exc)
        raise


def _audit_if_opened(action_name: str, target: str, before: str, exc: Exception) -> None:
    try:
        state, failures, opened_at, resets_at = _breaker_state(action_name, target)
    except REDIS_ERRORS:
        log.exception("cannot read the breaker of %s on %s after a failure", action_name, target)
        return
    if state == pybreaker.STATE_OPEN and before != pybreaker.STATE_OPEN:
        with transaction.atomic():
            audit.record(
                "resilience.breaker_opened",
                actor="system:resilience",
                obj=("circuit_breaker", action_name[:64]),
                data={
                    "action": action_name,
                    "target": target,
                    "failures": failures,
                    "error": str(exc)[:500],
                    "resets_at": resets_at,
                },
            )


def open_breakers() -> list[dict]:
    """Open or half-open breakers: ``[{"action", "target", "state", "failures", "opened_at", "resets_at"}]``."""
    client = _redis()
    rows = []
    for raw in client.hkeys(BREAKERS_KEY):
        action_name, target = json.loads(raw)
        state, failures, opened_at, resets_at = _breaker_state(action_name, target)
        if state == pybreaker.STATE_CLOSED:
            if failures == 0:
                client.hdel(BREAKERS_KEY, raw)  # forgotten until its next call
            continue
        rows.append(
            {
                "action": action_name,
                "target": target,
                "state": state,
                "failures": failures,
                "opened_at": opened_at,
                "resets_at": resets_at,
            }
        )
    return sorted(rows, key=lambda r: (r["action"], r["target"]))


def spent_limits() -> list[dict]:
    """Rate limits with nothing left in their window: ``[{"action", "target", "limit", "resets_at"}]``."""
    client = _redis()
    limiter = _limiter(settings.REDIS_URL)
    rows = []
    for raw in client.hkeys(LIMITS_KEY):
        action_name, target = json.loads(raw)
        item = rate_limit_for(action_name)
        reset_time, remaining = limiter.get_window_stats(item, action_name, target)
        if remaining >= item.amount:
            client.hdel(LIMITS_KEY, raw)  # an empty window: nothing to show until the next call
        elif remaining <= 0:
            rows.append(
                {
                    "action": action_name,
                    "target": target,
                    "limit": str(item),
                    "resets_at": datetime.fromtimestamp(reset_time, UTC),
                }
            )
    return sorted(rows, key=lambda r: (r["action"], r["target"]))


def reset_breaker(action_name: str, target: str, *, actor) -> bool:
    """Close a breaker and clear its failures (audited). False when it was closed with no failures."""
    namespace = _namespace(action_name, target)
    with transaction.atomic():
        state, failures, _, _ = _breaker_state(action_name, target)
        if state == pybreaker.STATE_CLOSED and failures == 0:
            return False
        audit.record(
            "resilience.breaker_reset",
            actor=actor,
            obj=("circuit_breaker", action_name[:64]),
            data={"action": action_name, "target": target, "previous_state": state, "failures": failures},
        )
        # Written after the audit row: a Redis failure here rolls the audit event back with it.
        pipe = _redis().pipeline()
        pipe.set(f"{namespace}:pybreaker:state", pybreaker.STATE_CLOSED)
        pipe.set(f"{namespace}:pybreaker:fail_counter", 0)
        pipe.set(f"{namespace}:pybreaker:success_counter", 0)
        pipe.delete(f"{namespace}:pybreaker:opened_at")
        pipe.execute()
    return True
