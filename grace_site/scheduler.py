"""django-celery-beat's DatabaseScheduler, recording each tick in Redis.

`/api/health/` reads the age of the last tick to tell whether beat is alive.
"""

from __future__ import annotations

import logging
import time

import redis
from django_celery_beat.schedulers import DatabaseScheduler

from grace_site import redis as grace_redis

logger = logging.getLogger(__name__)

BEAT_TICK_KEY = "grace:beat:last_tick"


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
