"""Shipped defaults: safe policy rules, the beat entries that expire approvals and seal the audit log, the
governance groups.

``install()`` is idempotent: it creates what is missing and never overwrites an
operator's edits (rules are matched by name).
"""

from __future__ import annotations

from datetime import time

from django.db import transaction

from approvals import audit, groups
from approvals.choices import Effect
from approvals.models import PolicyRule
from grace_site.beat import ensure_interval_task

DEFAULT_RULES = [
    {
        "name": "deny-unknown-diagnosis",
        "description": "Never act on a signal GRACE could not diagnose: hand it to humans.",
        "priority": 10,
        "effect": Effect.DENY,
        "match_diagnoses": ["unknown"],
    },
    {
        "name": "cloud-production-two-approvers",
        "description": "AWS and Kubernetes changes in production need two approvers.",
        "priority": 50,
        "effect": Effect.REQUIRE_TIER,
        "tier": 3,
        "match_families": ["aws", "kubernetes"],
        "match_environments": ["production", "prod"],
    },
    {
        "name": "hourly-budget-per-target",
        "description": "At most 6 automated actions per target in any hour: a loop of heals is a symptom.",
        "priority": 100,
        "effect": Effect.LIMIT,
        "max_per_hour": 6,
    },
    {
        "name": "weekend-change-freeze",
        "description": "Example blackout (disabled): no production changes from Saturday 00:00 to Sunday 24:00 UTC.",
        "enabled": False,
        "priority": 20,
        "effect": Effect.DENY,
        "match_environments": ["production", "prod"],
        "window_weekdays": [5, 6],
        "window_start": time(0, 0),
        "window_end": time(23, 59),
        "window_timezone": "UTC",
    },
]

EXPIRE_TASK = "approvals.expire_requests"
EXPIRE_EVERY_SECONDS = 60
SEAL_TASK = "approvals.seal_audit"
SEAL_EVERY_SECONDS = 1


def install() -> int:
    """Create the default rules and beat entries when missing. Returns how many rows were created."""
    created = 0
    with transaction.atomic():
        for spec in DEFAULT_RULES:
            fields = {key: value for key, value in spec.items() if key != "name"}
            rule, made = PolicyRule.objects.get_or_create(name=spec["name"], defaults=fields)
            if made:
                rule.full_clean()
                audit.record("policy.rule_installed", actor="system:setup", obj=rule, data={"name": rule.name})
                created += 1
        created += ensure_interval_task(
            "approvals: expire approval requests",
            EXPIRE_TASK,
            every=EXPIRE_EVERY_SECONDS,
            queue="default",
            expires=EXPIRE_EVERY_SECONDS - 5,
            description="Expire overdue approval requests; their runs are escalated.",
        )
        created += ensure_interval_task(
            "approvals: seal the audit log",
            SEAL_TASK,
            every=SEAL_EVERY_SECONDS,
            queue="default",
            expires=10,
            description="Chain committed audit entries into the hash chain; sign a checkpoint when one is due.",
        )
        created += groups.ensure_groups()
    return created
