"""Fixtures for governance tests: runs to approve, approvers, and the broker's queues read back."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals.groups import ensure_groups

_counter = itertools.count(1)


def plan_hash(text: str = "plan") -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(autouse=True)
def _fresh_budgets(redis_client):
    """Hourly budgets (and who paid into them) are keyed by rule id, which a rolled-back test may reuse."""
    for pattern in ("LIMITS*grace-policy*", "grace-policy:spent:*"):
        for key in redis_client.scan_iter(match=pattern):
            redis_client.delete(key)
    yield


def resumes(published) -> list[tuple[str, list, str]]:
    return [entry for entry in published if entry[0] == "remediation.resume_run"]


@pytest.fixture
def make_run():
    from incidents.models import Incident
    from remediation import planner
    from remediation.models import HealRun

    def make(*, started_by=None, service="orders-db", environment="production", **fields) -> HealRun:
        plan = fields.pop("plan", {"steps": []})
        n = next(_counter)
        now = timezone.now()
        incident = Incident.objects.create(
            fingerprint=f"fp-{n}-{now.timestamp()}",
            source="api",
            service=service,
            environment=environment,
            title=f"{service} is unwell",
            first_seen=now,
            last_seen=now,
            diagnosis_code="sqlite_wal_bloat",
        )
        return HealRun.objects.create(
            incident=incident,
            status="AWAITING_APPROVAL",
            diagnosis_code="sqlite_wal_bloat",
            target=service,
            family="local",
            started_by=started_by,
            plan=plan,
            plan_hash=planner.plan_hash(plan),
            **fields,
        )

    return make


@pytest.fixture
def make_user(django_user_model):
    ensure_groups()  # transactional tests flush the groups the migration created

    def make(username: str, *groups: str, staff: bool = True):
        user = django_user_model.objects.create_user(username, password=f"pw-{username}-123456", is_staff=staff)
        for name in groups:
            user.groups.add(Group.objects.get(name=name))
        return django_user_model.objects.get(pk=user.pk)  # fresh permission cache

    return make


@pytest.fixture
def senior(make_user):
    return make_user("senior-1", "GRACE senior approvers")


@pytest.fixture
def senior2(make_user):
    return make_user("senior-2", "GRACE senior approvers")


@pytest.fixture
def operator(make_user):
    return make_user("operator-1", "GRACE operators")


CONTEXT = {
    "service": "orders-db",
    "diagnosis": "sqlite_wal_bloat",
    "plan": [{"action": "sqlite.checkpoint", "params": {"db_path": "/srv/orders.sqlite3"}}],
    "contract": [{"field": "wal_bytes", "op": "<=", "value": 1048576}],
    "snapshot_policy": "sqlite backup before checkpoint",
    "confidence": 0.42,
    "policy_explanation": [{"rule": "builtin:production", "matched": True, "why": "production", "effect": "tier 2"}],
}
