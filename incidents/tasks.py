"""Celery tasks of the intake: the health sweeps (queue ``sweeps``, scheduled by beat with ``expires``)."""

from celery import shared_task

from incidents import sweeps
from incidents.choices import SweepKind

_SWEEP_OPTIONS = {"acks_late": True, "soft_time_limit": 50, "time_limit": 60, "ignore_result": True}


@shared_task(name="incidents.sweep_host", **_SWEEP_OPTIONS)
def sweep_host() -> dict:
    return sweeps.sweep(SweepKind.HOST)


@shared_task(name="incidents.sweep_sqlite", **_SWEEP_OPTIONS)
def sweep_sqlite() -> dict:
    return sweeps.sweep(SweepKind.SQLITE)


@shared_task(name="incidents.sweep_postgres", **_SWEEP_OPTIONS)
def sweep_postgres() -> dict:
    return sweeps.sweep(SweepKind.POSTGRES)


@shared_task(name="incidents.sweep_http", **_SWEEP_OPTIONS)
def sweep_http() -> dict:
    return sweeps.sweep(SweepKind.HTTP)


@shared_task(name="incidents.sweep_target", **_SWEEP_OPTIONS)
def sweep_target(target_id: int) -> dict:
    """Sweep one target now (the admin's "sweep now" action)."""
    target = sweeps.SweepTarget.objects.filter(pk=target_id, enabled=True).first()
    return sweeps.sweep_target(target) if target is not None else {}
