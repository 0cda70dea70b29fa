"""Hand-offs between GRACE's parts: Celery tasks sent by their pinned names, to their queues, after commit.

The one place that knows each task's name and queue (tests/test_celery_config.py pins the names: a rename
strands messages already queued). Every hand-off goes after the sender's transaction commits, so a worker
never sees a row that is not there; a broker that cannot take it is logged, never raised into the committed
work: every hand-off has a beat-driven re-send (the reaper, the approval and notification redrives).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial

import redis
from celery import current_app
from django.db import transaction
from kombu.exceptions import KombuError

from grace_site import redis as grace_redis

logger = logging.getLogger(__name__)

# Capability queues; workers are placed per queue (see README).
HEAL_LOCAL, HEAL_CLOUD, SWEEPS, BENCHMARKS, DEFAULT = "heal.local", "heal.cloud", "sweeps", "benchmarks", "default"
INTAKE = "intake"  # the durable intake's consumers (incidents.intake)
QUEUES = (HEAL_LOCAL, HEAL_CLOUD, SWEEPS, BENCHMARKS, DEFAULT, INTAKE)


def host_queue(host: str) -> str:
    """The queue of the agent on ``host``: the stages that act on that machine's resources."""
    return f"{HEAL_LOCAL}.{host}"


# Pinned task names -> the queue each is sent to unless the sender routes it (a stage to heal.cloud...).
TASKS: dict[str, str] = {
    "remediation.start_run": HEAL_LOCAL,
    "remediation.start_runs": HEAL_LOCAL,
    "remediation.plan_run": HEAL_LOCAL,
    "remediation.gate_run": HEAL_LOCAL,
    "remediation.resume_run": HEAL_LOCAL,
    "remediation.snapshot_run": HEAL_LOCAL,
    "remediation.execute_run": HEAL_LOCAL,
    "remediation.verify_run": HEAL_LOCAL,
    "remediation.rollback_run": HEAL_LOCAL,
    "remediation.record_outcome": HEAL_LOCAL,
    "remediation.cancel_for_incident": HEAL_LOCAL,
    "remediation.reap": HEAL_LOCAL,
    "remediation.purge_snapshots": HEAL_LOCAL,
    "incidents.sweep_target": SWEEPS,
    "incidents.consume_deliveries": INTAKE,
    "incidents.redrive_deliveries": INTAKE,
    "learning.benchmark_execute": BENCHMARKS,
    "approvals.deliver_notification": DEFAULT,
    "grace.ping": DEFAULT,
}
# What a hand-off failing at the broker raises (the message is re-sent later by a beat pass).
BROKER_ERRORS = (KombuError, redis.RedisError, OSError)


# Inside strict(): the broker errors of after-commit hand-offs, raised when the block ends.
_refused: ContextVar[list[Exception] | None] = ContextVar("grace_handoff_refused", default=None)


@contextmanager
def strict() -> Iterator[None]:
    """An endpoint whose caller must hear that its hand-off failed (a manual heal, an operator rollback):
    after-commit hand-offs the broker refuses inside the block are still logged and left to the beat re-sends,
    and the first error is raised when the block ends, once every other commit hook has run. What was
    committed stays committed; the API answers 503 naming it."""
    refused: list[Exception] = []
    token = _refused.set(refused)
    try:
        yield
    finally:
        _refused.reset(token)
    if refused:
        raise refused[0]


def _note_refused(exc: Exception) -> None:
    refused = _refused.get()
    if refused is not None:
        refused.append(exc)


def send(task: str, *args, queue: str | None = None, **options) -> None:
    """Publish ``task`` now (no result is subscribed to: nobody waits on a hand-off)."""
    options.setdefault("ignore_result", True)
    current_app.send_task(task, args=list(args), queue=queue or TASKS[task], **options)


def send_on_commit(task: str, *args, queue: str | None = None, **options) -> None:
    """Publish ``task`` once the current transaction commits; a broker failure is logged, not raised."""
    transaction.on_commit(partial(_send_logged, task, args, queue, options))


def send_many_on_commit(task: str, ids: Iterable, *, queue: str | None = None) -> None:
    """One message per id, on one broker connection, after commit."""
    transaction.on_commit(partial(_send_many, task, list(ids), queue))


def _send_logged(task: str, args: tuple, queue: str | None, options: dict) -> None:
    try:
        send(task, *args, queue=queue, **options)
    except BROKER_ERRORS as exc:
        logger.warning("could not send %s%s (a beat pass sends it again): %s", task, list(args), exc)
        _note_refused(exc)


def send_many(task: str, ids: Iterable, *, queue: str | None = None) -> None:
    """One message per id, now, on one broker connection."""
    with current_app.producer_or_acquire() as producer:
        for object_id in ids:
            send(task, object_id, queue=queue, producer=producer)


def _send_many(task: str, ids: list, queue: str | None) -> None:
    try:
        send_many(task, ids, queue=queue)
    except BROKER_ERRORS as exc:
        logger.warning("could not send %s for %s (a beat pass sends them again): %s", task, ids, exc)
        _note_refused(exc)


def send_once(task: str, *args, key: str, ttl: float, queue: str | None = None) -> bool:
    """Publish ``task`` unless a message sent under ``key`` is still on its way: a wake-up that many senders
    ask for at once goes out once (a Redis ``SET NX`` with a ``ttl``, which the receiver ``release``s when it
    is done). Returns whether it was sent; a Redis or broker failure is logged (a beat pass sends it again)."""
    try:
        if not grace_redis.client().set(key, "1", nx=True, px=max(1, int(ttl * 1000))):
            return False
    except redis.RedisError as exc:
        logger.warning("could not send %s%s (a beat pass sends it again): %s", task, list(args), exc)
        _note_refused(exc)
        return False
    try:
        send(task, *args, queue=queue)
    except BROKER_ERRORS as exc:
        logger.warning("could not send %s%s (a beat pass sends it again): %s", task, list(args), exc)
        release(key)
        _note_refused(exc)
        return False
    return True


def send_once_on_commit(task: str, *args, key: str, ttl: float, queue: str | None = None) -> None:
    """``send_once`` after the current transaction commits."""
    transaction.on_commit(partial(send_once, task, *args, key=key, ttl=ttl, queue=queue))


def release(key: str) -> None:
    """The receiver of a ``send_once`` message is done: the next ``send_once`` under ``key`` goes out."""
    try:
        grace_redis.client().delete(key)
    except redis.RedisError as exc:
        logger.warning("could not release %s (it expires by itself): %s", key, exc)
