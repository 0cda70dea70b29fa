"""The one way GRACE reaches Redis: every module that needs a client or a rate-limit store asks here.

``REDIS_URL`` may be ``redis://``, ``rediss://`` or ``unix:///path/to/redis.sock?db=N``. redis-py
reads all three; limits spells a socket ``redis+unix://`` and is handed the same connection pool;
Celery gets ``redis+socket://`` (``celery_url``). So a URL means the same server and database to
every module. Clients are pooled per (URL, timeouts): a health check or a benchmark measures a
round trip, not a TCP handshake, and a test that changes ``settings.REDIS_URL`` gets a client for
the new URL.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from django.conf import settings
from limits.storage import RedisStorage

DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_TIMEOUT = 2.0


@lru_cache(maxsize=32)
def _pool(url: str, connect_timeout: float, timeout: float) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=timeout)


def client(
    url: str | None = None, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, timeout: float = DEFAULT_TIMEOUT
) -> redis.Redis:
    """A client of ``url`` (default ``settings.REDIS_URL``) with bounded connect and command timeouts."""
    return redis.Redis(connection_pool=_pool(url or settings.REDIS_URL, float(connect_timeout), float(timeout)))


def celery_url(url: str) -> str:
    """``url`` as Celery's broker and result backend spell it: a socket is ``redis+socket:///path``
    with the database as ``virtual_host`` (kombu knows no ``unix://`` transport)."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    query = parse_qsl(parts.query)
    db = next((value for key, value in query if key == "db"), "0")
    rest = [(key, value) for key, value in query if key != "db"]
    return f"redis+socket://{parts.path}?{urlencode([('virtual_host', db), *rest])}"


def limits_uri(url: str) -> str:
    """``url`` as limits spells it (``unix://`` is ``redis+unix://`` there)."""
    return "redis+" + url if url.startswith("unix://") else url


@lru_cache(maxsize=32)
def _storage(url: str, key_prefix: str, wrap_exceptions: bool, connect_timeout: float, timeout: float) -> RedisStorage:
    return RedisStorage(
        limits_uri(url),
        connection_pool=_pool(url, connect_timeout, timeout),
        key_prefix=key_prefix,
        wrap_exceptions=wrap_exceptions,
    )


def rate_limit_storage(
    url: str | None = None,
    *,
    key_prefix: str = RedisStorage.PREFIX,
    wrap_exceptions: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
) -> RedisStorage:
    """A limits storage on the same pool as ``client(url)``; its keys expire with their windows."""
    return _storage(url or settings.REDIS_URL, key_prefix, wrap_exceptions, float(connect_timeout), float(timeout))
