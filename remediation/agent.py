"""The agent side of a worker: it registers, reports every GRACE_AGENT_HEARTBEAT_SECONDS, and says when it stops.

Connected to Celery's worker signals (imported with the pipeline's tasks); runs in the worker's main process,
never in its task processes.
"""

from __future__ import annotations

import logging
import threading

from celery import signals
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from remediation import fleet, lifecycle

logger = logging.getLogger(__name__)
_stop = threading.Event()


@signals.worker_ready.connect
def _register(sender=None, **kwargs) -> None:
    name = sender.hostname
    queues = [queue.name for queue in sender.app.amqp.queues.consume_from.values()]
    try:
        fleet.register(name, queues=queues)
        resumed = lifecycle.resume_held(host=settings.GRACE_HOST)  # runs that waited for this host's agent
    except DatabaseError:
        logger.exception("agent %s could not register (it retries with its heartbeat)", name)
        resumed = 0
    finally:
        connection.close()
    logger.info(
        "agent %s of host %s consumes %s; %d waiting run(s) resumed",
        name,
        settings.GRACE_HOST,
        ", ".join(sorted(queues)),
        resumed,
    )
    _stop.clear()
    threading.Thread(target=_beat, args=(name, queues), name="grace-agent-heartbeat", daemon=True).start()


def _beat(name: str, queues: list[str]) -> None:
    while not _stop.wait(settings.GRACE_AGENT_HEARTBEAT_SECONDS):
        try:
            close_old_connections()
            if not fleet.heartbeat(name):
                fleet.register(name, queues=queues)  # the row was removed (a flushed database): register again
        except DatabaseError as exc:
            logger.warning("agent %s heartbeat failed: %s", name, exc)
        finally:
            connection.close()


@signals.worker_shutdown.connect
def _stopped(sender=None, **kwargs) -> None:
    _stop.set()
    try:
        fleet.stopped(sender.hostname)
    except DatabaseError:
        logger.exception("agent %s could not record that it stopped (it stops being live by itself)", sender.hostname)
    finally:
        connection.close()
