import logging

import redis
from rest_framework.throttling import AnonRateThrottle

logger = logging.getLogger(__name__)


class AnonThrottle(AnonRateThrottle):
    """Anonymous rate limit kept in Redis; fails open when Redis is down, so
    the health endpoint can still report that Redis is the failing part."""

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except redis.RedisError as exc:
            logger.warning("throttle state unavailable, allowing request: %s", exc)
            return True


class HealthThrottle(AnonThrottle):
    """Monitors and load balancers poll /api/health/ from few addresses: a scope of its own."""

    scope = "health"
