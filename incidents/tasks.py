"""Celery tasks of the intake: the health sweeps (queue ``sweeps``, scheduled by beat with ``expires``)."""

from grace_site.tasking import grace_task
from incidents import sweeps
from incidents.choices import SweepKind

_SWEEP = {"result": False, "retry": (), "soft_time_limit": 50, "time_limit": 60}  # the next sweep is the retry


@grace_task("incidents.sweep_host", **_SWEEP)
def sweep_host() -> dict:
    return sweeps.sweep(SweepKind.HOST)


@grace_task("incidents.sweep_sqlite", **_SWEEP)
def sweep_sqlite() -> dict:
    return sweeps.sweep(SweepKind.SQLITE)


@grace_task("incidents.sweep_postgres", **_SWEEP)
def sweep_postgres() -> dict:
    return sweeps.sweep(SweepKind.POSTGRES)


@grace_task("incidents.sweep_http", **_SWEEP)
def sweep_http() -> dict:
    return sweeps.sweep(SweepKind.HTTP)


@grace_task("incidents.sweep_target", **_SWEEP)
def sweep_target(target_id: int) -> dict:
    """Sweep one target now (the admin's "sweep now" action)."""
    target = sweeps.SweepTarget.objects.filter(pk=target_id, enabled=True).first()
    return sweeps.sweep_target(target) if target is not None else {}


@grace_task("incidents.consume_deliveries", result=False, soft_time_limit=60, time_limit=90)
def consume_deliveries(slot: int = 0) -> dict:
    """Turn stored deliveries into incidents, in batches, until none is pending (queue ``intake``)."""
    from incidents import intake

    return intake.consume(slot)


@grace_task("incidents.redrive_deliveries", result=False, retry=(), soft_time_limit=50, time_limit=60)
def redrive_deliveries() -> dict:
    """Beat: take back the batches of lost consumers, re-send lost wake-ups, remove old processed deliveries."""
    from incidents import intake

    return intake.redrive()
