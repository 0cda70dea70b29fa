"""The fleet: which agent acts on which host, and whether it is there.

Every stage that touches a local resource (a file, a directory, a process of one machine) runs on the agent of
the host that owns the resource, through that host's queue ``heal.local.<host>``; snapshots stay on that host,
so its rollbacks find them. An agent registers when its worker starts and reports every
``GRACE_AGENT_HEARTBEAT_SECONDS``; one silent for ``GRACE_AGENT_LIVE_SECONDS`` is not live.
"""

from __future__ import annotations

import os
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from grace_site.handoff import host_queue  # noqa: F401 - part of this module's interface
from remediation.models import Agent

VERSION = "0.1.0"


def live_agents(now=None):
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.GRACE_AGENT_LIVE_SECONDS)
    return Agent.objects.filter(last_seen__gte=cutoff, stopped_at__isnull=True)


def live(host: str, *, now=None) -> bool:
    return live_agents(now).filter(host=host).exists()


def register(name: str, *, queues: list[str]) -> Agent:
    now = timezone.now()
    agent, _ = Agent.objects.update_or_create(
        name=name,
        defaults={
            "host": settings.GRACE_HOST,
            "queues": sorted(queues),
            "version": VERSION,
            "var_dir": str(settings.VAR_DIR),
            "pid": os.getpid(),
            "started_at": now,
            "last_seen": now,
            "stopped_at": None,
        },
    )
    return agent


def heartbeat(name: str) -> bool:
    return bool(Agent.objects.filter(name=name, stopped_at__isnull=True).update(last_seen=timezone.now()))


def stopped(name: str) -> None:
    Agent.objects.filter(name=name).update(stopped_at=timezone.now())
