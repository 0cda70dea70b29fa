"""Celery tasks of the learning app: thin wrappers, queue ``benchmarks`` (routed by name)."""

from grace_site.tasking import grace_task
from learning import benchmarks

_LIMITS = {"retry": (), "soft_time_limit": 240, "time_limit": benchmarks.ABANDONED_AFTER}


@grace_task("learning.benchmark_run", **_LIMITS)
def benchmark_run(suite_name: str) -> int:
    """Beat entry point: create and run one benchmark run of the named suite; returns the run id."""
    return benchmarks.run_suite(suite_name, trigger="schedule").pk


@grace_task("learning.benchmark_execute", **_LIMITS)
def benchmark_execute(run_id: int) -> int:
    """Run a benchmark run created by the API (idempotent: a run past ``queued`` is left alone)."""
    return benchmarks.execute_run(run_id).pk
