"""The Celery application: `celery -A grace_site worker` / `celery -A grace_site beat`."""

import os

from celery import Celery, signals
from kombu import Queue

from grace_site import broker
from grace_site.handoff import QUEUES

broker.install()  # a worker survives its Redis restarting (see grace_site/broker.py)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")

app = Celery("grace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in QUEUES]
app.autodiscover_tasks(["grace_site", "approvals", "incidents", "remediation", "learning"])


# Celery's Django fixup closes every database connection before and after each task whatever
# CONN_MAX_AGE says, so each pipeline stage would open a new PostgreSQL session (about 4 ms).
# settings.CELERY_DB_REUSE_MAX turns that off when connections are meant to persist, and tasks
# get Django's request lifecycle instead: before and after each task, connections that are
# broken, left in a transaction or older than CONN_MAX_AGE are closed; healthy ones are kept.
@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_connections(sender=None, **kwargs) -> None:
    if sender is not None and getattr(sender.request, "is_eager", False):
        return  # an eager task runs inside its caller's transaction
    from django.db import close_old_connections

    close_old_connections()


@signals.worker_init.connect
def _consume_this_hosts_queue(sender=None, **kwargs) -> None:
    """Every worker also consumes its host's queue (heal.local.<GRACE_HOST>): the stages that act on this
    machine's resources are sent there (see remediation/fleet.py). Added once the worker has selected the
    queues of its ``-Q`` (which replaces whatever was selected before it, so an earlier signal is too soon)."""
    from django.conf import settings

    from grace_site.handoff import host_queue

    sender.app.amqp.queues.select_add(host_queue(settings.GRACE_HOST))


@signals.beat_init.connect
def _record_beat_scheduler(sender=None, **kwargs) -> None:
    """Whatever scheduler beat was started with, say which: /api/health/ names one that records no tick."""
    from grace_site.scheduler import record_scheduler

    if sender is not None:
        record_scheduler(sender.scheduler)
