"""A worker outlives its Redis dying while a message is unacknowledged (grace_site.broker).

The sequence is the one a worker's log showed when it stopped for good: the worker had taken a message (not
yet acknowledged, ``acks_late``) and waited in BRPOP; Redis was killed; the BRPOP read and the close of the
remote-control channel's LISTEN socket both failed; Celery then ``collect()``ed the connection and
``close()``d it, ignoring connection errors only. Real redis-server and kombu; the two socket failures are
forced, since which socket notices a dead server first is a race.
"""

from __future__ import annotations

import contextlib

import redis as redis_py
from kombu import Connection, Exchange, Queue

import grace_site.celery  # noqa: F401 - installs GRACE's broker channel, as every worker does
from grace_site import broker
from tests.support.processes import free_port, start_redis


def _closed_by_server(*args, **kwargs):
    raise redis_py.ConnectionError("Connection closed by server.")


def test_closing_a_lost_connection_with_an_unacked_message_raises_only_a_connection_error(tmp_path):
    port = free_port()
    server = start_redis(tmp_path, port)
    url = f"redis://127.0.0.1:{port}/0"
    queue = Queue("broker-test", Exchange("broker-test"), "broker-test")
    with Connection(url) as producer:
        producer.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key="broker-test", declare=[queue])
    connection = Connection(url, transport_options={"socket_timeout": 5})
    try:
        channel = connection.default_channel
        taken = []
        consumer = connection.Consumer([queue], callbacks=[lambda body, message: taken.append(message)])
        consumer.consume()
        connection.drain_events(timeout=5)
        assert len(taken) == 1 and not taken[0].acknowledged  # unacked, as with acks_late
        channel._brpop_start()  # waiting in BRPOP, as an idle worker does
        server.kill()
        server.proc.wait(10)

        def brpop_read_fails(**kwargs):
            channel._in_poll = None  # as redis-py leaves it when the read fails
            _closed_by_server()

        channel._brpop_read = brpop_read_fails
        connection.transport.cycle.close = _closed_by_server

        # What Celery's consumer does on a lost broker: collect (errors swallowed), then close, ignoring only
        # connection errors. Anything else stops the worker ("Unrecoverable error").
        with contextlib.suppress(Exception):
            connection.collect(socket_timeout=1)
        with contextlib.suppress(*connection.connection_errors):
            connection.close()
    finally:
        server.stop()
    assert isinstance(channel, broker.Channel)
