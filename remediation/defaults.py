"""Shipped defaults: playbooks for every default diagnosis with a remedy, and beat entries.

Idempotent, and never overwrites what an operator has edited: rows are created
only when missing.
"""

from __future__ import annotations

from approvals import audit
from grace_site.beat import ensure_interval_task
from remediation.models import Playbook

ESCALATE = {
    "name": "escalate-to-humans",
    "description": "Diagnoses GRACE must never act on: hand them to humans.",
    "diagnosis_codes": ["unknown"],
    "steps": [],
    "tier": 3,
    "escalate_only": True,
}

BEAT = [
    # (name, task, every seconds, expires seconds, queue)
    ("remediation: reaper", "remediation.reap", 30, 25, "heal.local"),
    ("remediation: snapshot retention", "remediation.purge_snapshots", 3600, 1800, "heal.local"),
]


def default_playbooks() -> list[dict]:
    playbooks = [ESCALATE]
    for module in ("remediation.actions.local_playbooks", "remediation.actions.cloud_playbooks"):
        try:
            playbooks += __import__(module, fromlist=["PLAYBOOKS"]).PLAYBOOKS
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return playbooks


def install_beat(entries) -> int:
    return sum(
        ensure_interval_task(name, task, every=every, queue=queue, expires=expires)
        for name, task, every, expires, queue in entries
    )


def install() -> int:
    created = 0
    for spec in default_playbooks():
        fields = {k: v for k, v in spec.items() if k != "name"}
        playbook, was_created = Playbook.objects.get_or_create(name=spec["name"], defaults=fields)
        if was_created:
            audit.record("playbook.installed", obj=playbook, data={"name": playbook.name})
            created += 1
    return created + install_beat(BEAT)
