"""django-celery-beat's DatabaseScheduler, recording each tick in Redis.

`/api/health/` reads the age of the last tick to tell whether beat is alive. Whatever scheduler beat runs, it
records which one when it starts (``record_scheduler``, on Celery's ``beat_init`` signal), so health can say
plainly that beat runs but with a scheduler that records no tick (and reads none of GRACE's schedules).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

import redis
from django_celery_beat.schedulers import DatabaseScheduler

from grace_site import redis as grace_redis

logger = logging.getLogger(__name__)

BEAT_TICK_KEY = "grace:beat:last_tick"
BEAT_SCHEDULER_KEY = "grace:beat:scheduler"
SCHEDULER_PATH = "grace_site.scheduler:GraceScheduler"


class GraceScheduler(DatabaseScheduler):
    _tick_client: redis.Redis | None = None
    _last_recorded = 0.0

    def tick(self, *args, **kwargs):
        interval = super().tick(*args, **kwargs)
        now = time.time()
        if now - self._last_recorded >= 1.0:
            self._record_tick(now)
        return interval

    def _record_tick(self, now: float) -> None:
        if self._tick_client is None:
            self._tick_client = grace_redis.client(connect_timeout=1, timeout=1)
        try:
            self._tick_client.set(BEAT_TICK_KEY, repr(now), ex=3600)
            self._last_recorded = now
        except redis.RedisError as exc:
            # Beat keeps scheduling; health shows the stale tick and names Redis.
            logger.warning("could not record beat tick: %s", exc)


def record_scheduler(scheduler: object) -> None:
    """Note in Redis which scheduler the beat that just started runs (kept a week), for ``/api/health/``."""
    cls = type(scheduler)
    entry = {
        "scheduler": f"{cls.__module__}:{cls.__qualname__}",
        "records_ticks": isinstance(scheduler, GraceScheduler),
        "started_at": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    try:
        grace_redis.client(connect_timeout=1, timeout=1).set(BEAT_SCHEDULER_KEY, json.dumps(entry), ex=7 * 86400)
    except redis.RedisError as exc:
        logger.warning("could not record beat's scheduler: %s", exc)
