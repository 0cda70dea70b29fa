"""Platform tasks that belong to no single app."""

from celery import shared_task


@shared_task(name="grace.ping", acks_late=True, soft_time_limit=5, time_limit=10)
def ping() -> str:
    """A no-op round trip: used by health checks and as the benchmark baseline."""
    return "pong"
