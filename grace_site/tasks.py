"""Platform tasks that belong to no single app."""

from grace_site.tasking import grace_task


@grace_task("grace.ping", retry=(), soft_time_limit=5, time_limit=10)
def ping() -> str:
    """A no-op round trip: used by health checks and as the benchmark baseline."""
    return "pong"
