"""Every write the API offers leaves an audit event, by the caller, with the new values.

``WRITES`` lists every write operation of the published schema; a new one fails
``test_every_write_operation_of_the_schema_is_walked`` until it is added here with what it must record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import services as approvals
from approvals.models import AuditEvent
from incidents import channels
from incidents.models import Delivery, Incident, Resource
from learning.models import BenchmarkSuite
from remediation.models import HealRun, Playbook
from tests.governance.conftest import CONTEXT, make_run, make_user, plan_hash  # noqa: F401 - fixtures
from tests.incidents.conftest import WEBHOOK_TOKEN, alert, alertmanager_body, default_rules  # noqa: F401
from tests.remediation.conftest import allowed_root  # noqa: F401 - fixture
from tests.support import inventory

pytestmark = pytest.mark.django_db


@dataclass
class Write:
    path: str
    body: dict | list | None
    action: str  # the audit action it must write
    shows: str  # a new value the event's data must carry
    status: tuple[int, ...] = (200, 201, 202, 204)
    headers: dict = field(default_factory=dict)


def _incident(**extra) -> Incident:
    now = timezone.now()
    fields = {
        "fingerprint": f"walk-{now.timestamp()}",
        "source": "api",
        "service": "orders",
        "title": "orders down",
        "first_seen": now,
        "last_seen": now,
        "diagnosis_code": "sqlite_wal_bloat",
        **extra,
    }
    return Incident.objects.create(**fields)


def _parked_delivery() -> Delivery:
    body = '{"title": "walked", "service": "orders"}'
    return inventory.parked_delivery(channels.builtin(channels.USERS), body, kind="api", error="walk-parked")


def _resource(root) -> Resource:
    db = root / "orders.sqlite3"
    db.touch()
    return inventory.resource("orders", "sqlite", db, name="db")


def _approval(new_run):
    run = new_run()
    return approvals.open_request(run_id=run.pk, plan_hash=plan_hash(), tier=2, requested_by_id=None, context=CONTEXT)


def _open_breaker() -> str:
    """An open breaker of http.probe on a loopback URL; its target as the API lists it."""
    from remediation import resilience
    from remediation.actions import registry
    from remediation.actions.base import ActionError

    action, url = registry.get("http.probe"), "http://127.0.0.1:9/walk"

    def failing() -> dict:
        raise ActionError("upstream refused the connection")

    for _ in range(10):
        try:
            resilience.run_guarded(action, {"url": url}, failing)
        except (ActionError, resilience.Blocked):
            pass
    return next(b["target"] for b in resilience.open_breakers() if b["action"] == "http.probe")


def _playbook() -> Playbook:
    return Playbook.objects.create(name="walked", diagnosis_codes=["walk_code"], steps=[], tier=2)


# (METHOD, path template) -> a function of the fixtures making the object and the write.
WRITES = {
    ("POST", "/api/approvals/{id}/approve/"): lambda f: Write(
        f"/api/approvals/{_approval(f.make_run).pk}/approve/",
        {"reason": "looked at the plan"},
        "approval.decision",
        "looked at the plan",
    ),
    ("POST", "/api/approvals/{id}/reject/"): lambda f: Write(
        f"/api/approvals/{_approval(f.make_run).pk}/reject/",
        {"reason": "wrong target"},
        "approval.decision",
        "wrong target",
    ),
    ("POST", "/api/channels/"): lambda f: Write(
        "/api/channels/", {"name": "walk-ci", "kind": "api", "source": "api"}, "channel.created", "walk-ci"
    ),
    ("PUT", "/api/channels/{id}/"): lambda f: Write(
        f"/api/channels/{inventory.channel('walk-put')[0].pk}/",
        {"name": "walk-put", "kind": "api", "source": "api", "enabled": False},
        "channel.saved",
        '"after": false',
    ),
    ("PATCH", "/api/channels/{id}/"): lambda f: Write(
        f"/api/channels/{inventory.channel('walk-patch')[0].pk}/",
        {"name": "walk-patched"},
        "channel.saved",
        "walk-patched",
    ),
    ("DELETE", "/api/channels/{id}/"): lambda f: Write(
        f"/api/channels/{inventory.channel('walk-gone')[0].pk}/", None, "channel.deleted", "walk-gone"
    ),
    ("POST", "/api/channels/{id}/token/"): lambda f: Write(
        f"/api/channels/{inventory.channel('walk-token')[0].pk}/token/", None, "channel.token_issued", '"token": "grc_'
    ),
    ("POST", "/api/incidents/"): lambda f: Write(
        "/api/incidents/?wait=true",
        {"title": "walked incident", "service": "orders"},
        "incident.created",
        "walked incident",
    ),
    ("POST", "/api/incidents/{id}/heal/"): lambda f: Write(
        f"/api/incidents/{_incident().pk}/heal/", {"dry_run": True}, "run.created", '"dry_run": true'
    ),
    ("POST", "/api/inventory/resources/"): lambda f: Write(
        "/api/inventory/resources/",
        {"service": "orders", "name": "cache", "kind": "cache", "target": str(f.allowed_root)},
        "inventory.resource_created",
        str(f.allowed_root),
    ),
    ("PUT", "/api/inventory/resources/{id}/"): lambda f: Write(
        f"/api/inventory/resources/{_resource(f.allowed_root).pk}/",
        {"service": "orders", "name": "main-db", "kind": "sqlite", "target": str(f.allowed_root / "orders.sqlite3")},
        "inventory.resource_saved",
        "main-db",
    ),
    ("PATCH", "/api/inventory/resources/{id}/"): lambda f: Write(
        f"/api/inventory/resources/{_resource(f.allowed_root).pk}/",
        {"name": "renamed-db"},
        "inventory.resource_saved",
        "renamed-db",
    ),
    ("DELETE", "/api/inventory/resources/{id}/"): lambda f: Write(
        f"/api/inventory/resources/{_resource(f.allowed_root).pk}/",
        None,
        "inventory.resource_deleted",
        "orders.sqlite3",
    ),
    ("POST", "/api/inventory/services/"): lambda f: Write(
        "/api/inventory/services/",
        {"name": "billing", "environment": "staging"},
        "inventory.service_created",
        "billing",
    ),
    ("PUT", "/api/inventory/services/{id}/"): lambda f: Write(
        f"/api/inventory/services/{inventory.service('shop').pk}/",
        {"name": "shop", "environment": "production", "tier_floor": 2},
        "inventory.service_saved",
        "production",
    ),
    ("PATCH", "/api/inventory/services/{id}/"): lambda f: Write(
        f"/api/inventory/services/{inventory.service('shop').pk}/",
        {"description": "the web shop"},
        "inventory.service_saved",
        "the web shop",
    ),
    ("DELETE", "/api/inventory/services/{id}/"): lambda f: Write(
        f"/api/inventory/services/{inventory.service('old-shop').pk}/", None, "inventory.service_deleted", "old-shop"
    ),
    ("POST", "/api/playbooks/"): lambda f: Write(
        "/api/playbooks/",
        {"name": "new-walk", "diagnosis_codes": ["walk_code"], "steps": [], "tier": 3},
        "playbook.created",
        "new-walk",
    ),
    ("PUT", "/api/playbooks/{id}/"): lambda f: Write(
        f"/api/playbooks/{_playbook().pk}/",
        {"name": "walked", "diagnosis_codes": ["walk_code"], "steps": [], "tier": 3, "description": "put in place"},
        "playbook.updated",
        "put in place",
    ),
    ("PATCH", "/api/playbooks/{id}/"): lambda f: Write(
        f"/api/playbooks/{_playbook().pk}/", {"enabled": False}, "playbook.updated", '"enabled"'
    ),
    ("DELETE", "/api/playbooks/{id}/"): lambda f: Write(
        f"/api/playbooks/{_playbook().pk}/", None, "playbook.deleted", "walked"
    ),
    ("POST", "/api/resilience/reset/"): lambda f: Write(
        "/api/resilience/reset/",
        {"action": "http.probe", "target": _open_breaker()},
        "resilience.breaker_reset",
        '"previous_state": "open"',
    ),
    ("POST", "/api/runs/{id}/cancel/"): lambda f: Write(
        f"/api/runs/{HealRun.objects.create(incident=_incident(), status='AWAITING_APPROVAL').pk}/cancel/",
        None,
        "run.transition",
        "CANCELLED",
    ),
    ("POST", "/api/runs/{id}/rollback/"): lambda f: Write(
        f"/api/runs/{HealRun.objects.create(incident=_incident(status='resolved'), status='SUCCEEDED', family='local', finished_at=timezone.now()).pk}/rollback/",  # noqa: E501
        None,
        "run.transition",
        "ROLLING_BACK",
    ),
    ("POST", "/api/verification/benchmarks/{suite}/"): lambda f: Write(
        f"/api/verification/benchmarks/{BenchmarkSuite.objects.create(name='walk', checks=[]).name}/",
        None,
        "benchmark.run_queued",
        "walk",
    ),
    ("POST", "/api/deliveries/{id}/replay/"): lambda f: Write(
        f"/api/deliveries/{_parked_delivery().pk}/replay/", None, "delivery.replayed", '"status": "pending"'
    ),
    ("POST", "/api/webhooks/alertmanager/"): lambda f: Write(
        "/api/webhooks/alertmanager/?wait=true",
        alertmanager_body(alert("WalkedAlert", service="orders")),
        "incident.created",
        '"channel": "alertmanager"',
        headers={"HTTP_AUTHORIZATION": f"Bearer {WEBHOOK_TOKEN}"},
    ),
}


def test_every_write_operation_of_the_schema_is_walked(api_client, admin_user):
    api_client.force_authenticate(admin_user)
    schema = api_client.get("/api/schema/", {"format": "json"}).json()

    offered = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if method in ("post", "put", "patch", "delete")
    }

    assert offered == set(WRITES)


class Fixtures:
    def __init__(self, new_run, root):
        self.make_run, self.allowed_root = new_run, root


@pytest.mark.parametrize("operation", sorted(WRITES), ids=lambda op: f"{op[0]} {op[1]}")
def test_each_write_records_an_audit_event_by_the_caller_with_the_new_values(
    operation,
    api_client,
    make_user,
    make_run,
    allowed_root,
    settings,
    default_rules,
    django_capture_on_commit_callbacks,
):
    settings.GRACE_WEBHOOK_TOKEN = WEBHOOK_TOKEN
    inventory.service("orders")
    write = WRITES[operation](Fixtures(make_run, allowed_root))
    caller = make_user("walker", "GRACE operators")
    caller.is_superuser = True
    caller.save()
    if not write.headers:  # the webhook authenticates with its channel's token, nothing else
        api_client.force_authenticate(caller)
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    since = timezone.now() - timedelta(seconds=1)

    with django_capture_on_commit_callbacks(execute=False):  # nothing is handed to a worker
        response = getattr(api_client, operation[0].lower())(write.path, write.body, format="json", **write.headers)

    assert response.status_code in write.status, response.content
    events = AuditEvent.objects.filter(id__gt=before, action=write.action, at__gte=since)
    assert events.exists(), (
        f"no {write.action}: {list(AuditEvent.objects.filter(id__gt=before).values_list('action', flat=True))}"
    )  # noqa: E501
    event = events.latest("id")
    who = "alertmanager" if operation[1] == "/api/webhooks/alertmanager/" else "walker"
    assert who in event.actor, event.actor
    assert write.shows in json.dumps(event.data), event.data
