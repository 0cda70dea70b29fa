"""kombu's Redis transport, with the one fix a worker needs to outlive its broker restarting.

When the broker connection drops, Celery's consumer ``collect()``s the connection (which detaches it from its
transport, ``transport.client = None``) and then ``close()``s it. A channel the first pass could not close (its
BRPOP or LISTEN socket already dead) is closed again in the second, and restoring its unacknowledged messages
then builds a new connection pool from ``transport.client``: ``AttributeError: 'NoneType' object has no
attribute 'hostname'``, which Celery does not treat as a connection error: the worker stops ("Unrecoverable
error") and nothing consumes until someone restarts it. Here that is the connection error it is: the close is
ignored, the consumer reconnects. The messages could not have been restored anyway (the broker is gone); the
reaper sends their stages again.
"""

from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed (lost and collected)")
        return super()._connparams(asynchronous=asynchronous)


def install() -> None:
    """Every Redis broker connection (redis://, rediss://, redis+socket://) uses ``Channel``."""
    if not issubclass(kombu_redis.Transport.Channel, Channel):
        kombu_redis.Transport.Channel = Channel
