"""Real rows the learning tests need: incidents and finished heal runs."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from django.utils import timezone

from incidents.models import Incident
from remediation.choices import RunStatus
from remediation.models import HealRun

_seq = itertools.count(1)


def make_run(
    *, service: str = "orders-db", diagnosis: str = "sqlite_wal_bloat", status: str = "SUCCEEDED", now=None
) -> HealRun:
    """A finished run of an incident first seen five minutes before ``now``."""
    now = now or timezone.now()
    n = next(_seq)
    incident = Incident.objects.create(
        fingerprint=f"fp-{n}-{now.timestamp()}",
        source="api",
        service=service,
        title=f"test incident {n}",
        first_seen=now - timedelta(minutes=5),
        last_seen=now,
        status="resolved",
        diagnosis_code=diagnosis,
    )
    finished = now if status in RunStatus.TERMINAL else None
    return HealRun.objects.create(
        incident=incident, status=status, diagnosis_code=diagnosis, target=service, finished_at=finished
    )


def outcome_kwargs(run: HealRun, *, playbook: str = "wal-checkpoint", outcome: str = "succeeded", **extra) -> dict:
    finished: datetime = extra.pop("finished_at", timezone.now())
    seconds = extra.pop("seconds", 12.5)
    kwargs = {
        "run_id": run.pk,
        "incident_id": run.incident_id,
        "diagnosis_code": run.diagnosis_code,
        "playbook": playbook,
        "service": run.incident.service,
        "target": run.target,
        "tier": 1,
        "outcome": outcome,
        "stage_durations": {"plan": 0.1, "execute": seconds - 0.1},
        "contract_results": [{"field": "wal_bytes", "op": "<=", "expected": 1048576, "actual": 0, "passed": True}],
        "started_at": finished - timedelta(seconds=seconds),
        "finished_at": finished,
    }
    kwargs.update(extra)
    return kwargs
