"""Shipped defaults: a playbook for every shipped diagnosis, and beat entries.

A diagnosis with a safe remedy gets a playbook that acts (``remediation.actions.*_playbooks``); one without
(or whose service lacks the resource the remedy needs) gets an escalate-with-evidence playbook: it acts on
nothing and gathers what the person taking over needs into the escalation (``remediation.evidence``).
Idempotent, and never overwrites what an operator has edited: rows are created only when missing.
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

# Escalate with evidence: no safe generic remedy (or none that fits the service), so hand over what a person
# needs first. Each is also the fallback of its diagnosis when no acting playbook fits the service.
EVIDENCE = [
    {
        "name": "high-cpu-evidence",
        "description": "Busy CPU has no safe generic remedy: hand it to humans with the busiest processes.",
        "diagnosis_codes": ["high_cpu"],
        "steps": [{"evidence": "host.top_processes", "params": {"sort_by": "cpu", "limit": 10}}],
    },
    {
        "name": "memory-pressure-evidence",
        "description": "Memory pressure has no safe generic remedy: hand it to humans with the largest processes.",
        "diagnosis_codes": ["memory_pressure"],
        "steps": [{"evidence": "host.top_processes", "params": {"sort_by": "memory", "limit": 10}}],
    },
    {
        "name": "disk-pressure-evidence",
        "description": "Disk pressure where the service declares no cache to clear: hand it to humans with the "
        "disks' usage and the service's caches.",
        "diagnosis_codes": ["disk_pressure"],
        "steps": [{"evidence": "host.disk_usage"}],
    },
    {
        "name": "latency-spike-evidence",
        "description": "A latency spike has no safe generic remedy: hand it to humans with the endpoint's latency "
        "now and the busiest processes.",
        "diagnosis_codes": ["latency_spike"],
        "steps": [
            {"evidence": "http.latency", "params": {"count": 5}},
            {"evidence": "host.top_processes", "params": {"sort_by": "cpu", "limit": 5}},
        ],
    },
    {
        "name": "benchmark-regression-evidence",
        "description": "A benchmark regression: hand it to humans with the metric's recent history against its "
        "baseline, and what else kept the machine busy.",
        "diagnosis_codes": ["benchmark_regression"],
        "steps": [
            {"evidence": "benchmark.history", "params": {"runs": 30}},
            {"evidence": "host.top_processes", "params": {"sort_by": "cpu", "limit": 5}},
        ],
    },
]
EVIDENCE = [{**spec, "tier": 1, "escalate_only": True, "cooldown_seconds": 300} for spec in EVIDENCE]

BEAT = [
    # (name, task, every seconds, expires seconds, queue)
    ("remediation: reaper", "remediation.reap", 30, 25, "heal.local"),
    ("remediation: snapshot retention", "remediation.purge_snapshots", 3600, 1800, "heal.local"),
]


def default_playbooks() -> list[dict]:
    playbooks = [ESCALATE, *EVIDENCE]
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
