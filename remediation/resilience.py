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
- Every key expires: a breaker's state ``GRACE_RESILIENCE_STATE_TTL`` seconds after its last
  use, a rate-limit window with its period, and the indexes that list them with their
  longest-lived entry. Redis holds state for the targets in use, not for every target
  ever seen.

Fail closed: when Redis cannot be read before a call, the call is ``Blocked`` with
reason "resilience state unavailable: ..." and the action does not run. Once the
action has run, a Redis error while recording the outcome is logged by pybreaker
and does not turn a finished action into a failure.
"""

from __future__ import annotations

import calendar
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pybreaker
import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from limits import RateLimitItem, parse
from limits.errors import StorageError
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
from grace_site import redis as grace_redis
from remediation.actions.base import Action, ActionError, ActionRefused

log = logging.getLogger(__name__)

PREFIX = "grace:resilience"
# Sorted sets of the (action, target) pairs seen, scored by when their state expires, so the state
# can be listed without SCAN; entries past their score are trimmed on every write.
BREAKERS_KEY = f"{PREFIX}:breaker-index"
LIMITS_KEY = f"{PREFIX}:limit-index"
REDIS_ERRORS = (redis.RedisError, StorageError)


class Blocked(Exception):
    """The call was not made: its breaker is open, its rate limit is spent, or that state cannot be read."""

    def __init__(self, reason: str, *, kind: str, reset_at: datetime | None = None, unreadable: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "breaker" | "rate_limit"
        self.reset_at = reset_at
        self.unreadable = unreadable  # the state could not be read (Redis down): worth retrying for a while


def _limiter() -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(grace_redis.rate_limit_storage(key_prefix=f"{PREFIX}:limit", wrap_exceptions=True))


def _redis() -> redis.Redis:
    return grace_redis.client()


def state_ttl() -> int:
    """Seconds a breaker's state and an index entry outlive their last use."""
    return settings.GRACE_RESILIENCE_STATE_TTL


class ExpiringRedisStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage whose every key expires ``state_ttl()`` seconds after its last write.

    A breaker that has not been used for that long is forgotten (closed, no failures): its keys
    cannot pile up as targets multiply. The TTL is at least the reset timeout (checked at start-up),
    so an open breaker never expires before it would let a trial call through anyway.
    """

    def _keys(self) -> list[str]:
        return [self._namespace(name) for name in ("state", "fail_counter", "success_counter", "opened_at")]

    def _initialize_redis_state(self, state: str) -> None:
        ttl = state_ttl()
        pipe = self._redis.pipeline()
        pipe.set(self._namespace("fail_counter"), 0, nx=True, ex=ttl)
        pipe.set(self._namespace("success_counter"), 0, nx=True, ex=ttl)
        pipe.set(self._namespace("state"), state, nx=True, ex=ttl)
        for key in self._keys():  # every use keeps the breaker's state alive a TTL longer
            pipe.expire(key, ttl)
        pipe.execute()

    def _write(self, name: str, value) -> None:
        try:
            self._redis.set(self._namespace(name), value, ex=state_ttl())
        except redis.RedisError:
            self.logger.exception("RedisError")

    def _increment(self, name: str) -> None:
        try:
            pipe = self._redis.pipeline()
            pipe.incr(self._namespace(name))
            pipe.expire(self._namespace(name), state_ttl())
            pipe.execute()
        except redis.RedisError:
            self.logger.exception("RedisError")

    @property
    def state(self) -> str:
        return pybreaker.CircuitRedisStorage.state.fget(self)

    @state.setter
    def state(self, state: str) -> None:
        self._write("state", str(state))

    def increment_counter(self) -> None:
        self._increment("fail_counter")

    def reset_counter(self) -> None:
        self._write("fail_counter", 0)

    def increment_success_counter(self) -> None:
        self._increment("success_counter")

    def reset_success_counter(self) -> None:
        self._write("success_counter", 0)

    @property
    def opened_at(self):
        return pybreaker.CircuitRedisStorage.opened_at.fget(self)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        key = self._namespace("opened_at")
        stamp = int(calendar.timegm(now.timetuple()))

        def set_if_greater(pipe) -> None:
            current = pipe.get(key)
            pipe.multi()
            if not current or stamp > int(current):
                pipe.set(key, stamp, ex=state_ttl())

        try:
            self._redis.transaction(set_if_greater, key)
        except redis.RedisError:
            self.logger.exception("RedisError")


def _key(action_name: str, target: str) -> str:
    return json.dumps([action_name, target])


def _namespace(action_name: str, target: str) -> str:
    return f"{PREFIX}:breaker:{_key(action_name, target)}"


def _breaker_keys(namespace: str) -> list[str]:
    return [f"{namespace}:pybreaker:{name}" for name in ("state", "fail_counter", "opened_at")]


def _breaker(action_name: str, target: str) -> pybreaker.CircuitBreaker:
    storage = ExpiringRedisStorage(
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


def _longest_window() -> int:
    limits_ = [settings.GRACE_RATE_LIMIT, *settings.GRACE_RATE_LIMITS.values()]
    return max(parse(raw).get_expiry() for raw in limits_)


def _remember(index: str, member: str, seconds: int, index_seconds: int) -> None:
    """Index ``member`` for ``seconds`` (its state's lifetime) and drop the entries whose state expired.
    The index itself expires ``index_seconds`` (its longest-lived entry's lifetime) after its last write."""
    now = time.time()
    pipe = _redis().pipeline()
    pipe.zadd(index, {member: now + seconds})
    pipe.zremrangebyscore(index, "-inf", now)
    pipe.expire(index, max(seconds, index_seconds))
    pipe.execute()


def _indexed(index: str) -> list[bytes]:
    client = _redis()
    client.zremrangebyscore(index, "-inf", time.time())
    return client.zrange(index, 0, -1)


def _spend_rate_limit(action_name: str, target: str) -> None:
    item = rate_limit_for(action_name)
    limiter = _limiter()
    _remember(LIMITS_KEY, _key(action_name, target), item.get_expiry(), _longest_window())
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
        _remember(BREAKERS_KEY, _key(action.name, target), state_ttl(), state_ttl())
        before = _check_breaker(action.name, target)
        stage = "rate_limit"
        _spend_rate_limit(action.name, target)
    except REDIS_ERRORS as exc:
        raise Blocked(f"resilience state unavailable: {exc}", kind=stage, unreadable=True) from exc
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
    for raw in _indexed(BREAKERS_KEY):
        action_name, target = json.loads(raw)
        state, failures, opened_at, resets_at = _breaker_state(action_name, target)
        if state == pybreaker.STATE_CLOSED:
            if failures == 0:
                client.zrem(BREAKERS_KEY, raw)  # forgotten until its next call
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
    limiter = _limiter()
    rows = []
    for raw in _indexed(LIMITS_KEY):
        action_name, target = json.loads(raw)
        item = rate_limit_for(action_name)
        reset_time, remaining = limiter.get_window_stats(item, action_name, target)
        if remaining >= item.amount:
            client.zrem(LIMITS_KEY, raw)  # an empty window: nothing to show until the next call
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
        pipe.set(f"{namespace}:pybreaker:state", pybreaker.STATE_CLOSED, ex=state_ttl())
        pipe.set(f"{namespace}:pybreaker:fail_counter", 0, ex=state_ttl())
        pipe.set(f"{namespace}:pybreaker:success_counter", 0, ex=state_ttl())
        pipe.delete(f"{namespace}:pybreaker:opened_at")
        pipe.execute()
    return True
