"""Operator actions on runs go through the lifecycle services, with the same claims the workers use."""

from __future__ import annotations

import pytest
from django.utils import timezone

from approvals.models import AuditEvent
from incidents.models import Incident
from remediation import lifecycle
from remediation.choices import RunStatus
from remediation.models import HealRun, RunEvent
from tests.support.race import run_together

pytestmark = pytest.mark.django_db(transaction=True)


def _run(status: str) -> HealRun:
    now = timezone.now()
    incident = Incident.objects.create(
        fingerprint=f"fp-{status}", source="api", title="t", first_seen=now, last_seen=now
    )
    return HealRun.objects.create(
        incident=incident, status=status, finished_at=now if status in RunStatus.TERMINAL else None
    )


def test_concurrent_retries_of_a_stage_dispatch_it_once(admin_user, published):
    run = _run(RunStatus.SNAPSHOTTED)  # as six operators' pages showed it

    results = run_together(lambda: lifecycle.retry_stage(run, actor=admin_user), 6)

    assert sorted(results) == [False] * 5 + [True]
    assert RunEvent.objects.filter(run=run, note__contains="dispatched again").count() == 1
    assert AuditEvent.objects.filter(action="run.retry", object_id=str(run.pk)).count() == 1
    assert [name for name, *_ in published] == ["remediation.execute_run"]
    assert HealRun.objects.get(pk=run.pk).reaper_tries == 1
    assert not lifecycle.retry_stage(run, actor=admin_user)  # moved on since it was read: nothing
    assert lifecycle.retry_stage(run.pk, actor=admin_user)  # read afresh: a second, deliberate retry


def test_a_waiting_or_finished_run_is_not_retried(admin_user, published):
    waiting, done = _run(RunStatus.AWAITING_APPROVAL), _run(RunStatus.CANCELLED)

    assert not lifecycle.retry_stage(waiting.pk, actor=admin_user)
    assert not lifecycle.retry_stage(done.pk, actor=admin_user)
    assert published == []
