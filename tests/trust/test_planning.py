"""Planning binds every step to an inventory resource of the incident's service (no worker needed)."""

from __future__ import annotations

import uuid

import pytest

from incidents.models import Incident
from remediation import planner
from remediation.models import Playbook
from tests.support import inventory

pytestmark = pytest.mark.django_db


def incident(service: str, labels: dict | None = None) -> Incident:
    return Incident.objects.create(
        fingerprint=uuid.uuid4().hex,
        source="api",
        service=service,
        title="t",
        labels=labels or {},
        first_seen="2026-01-01T00:00Z",
        last_seen="2026-01-01T00:00Z",
    )


def playbook(*steps: dict, name: str = "p") -> Playbook:
    return Playbook(name=name, diagnosis_codes=["x"], steps=list(steps))


def test_the_plan_records_the_inventory_environment_tier_floor_and_resource(allowed_root):
    inventory.resource(
        "orders", "sqlite", allowed_root / "o.sqlite3", name="db", environment="production", tier_floor=3
    )

    plan = planner.build(playbook({"action": "sqlite.analyze"}), incident("orders", {"environment": "staging"}))

    assert (plan.service, plan.environment, plan.tier_floor) == ("orders", "production", 3)
    (step,) = plan.steps
    assert step.params["path"] == str(allowed_root / "o.sqlite3")
    assert step.resource == {"service": "orders", "name": "db", "kind": "sqlite", "host": ""}
    assert planner.Plan.from_document(plan.to_document()) == plan
    assert plan.hash == planner.plan_hash(plan.to_document())


def test_a_label_selects_among_the_services_own_resources_by_name(allowed_root):
    inventory.resource("orders", "cache", allowed_root / "a", name="hot")
    inventory.resource("orders", "cache", allowed_root / "b", name="cold")

    chosen = planner.build(playbook({"action": "cache.clear"}), incident("orders", {"resource": "cold"}))
    custom = planner.build(
        playbook({"action": "cache.clear", "resource_label": "tier"}), incident("orders", {"tier": "hot"})
    )

    assert chosen.steps[0].params["path"] == str(allowed_root / "b")
    assert custom.steps[0].params["path"] == str(allowed_root / "a")
    with pytest.raises(planner.PlanError, match="has 2 cache resources .* must name one with the label 'resource'"):
        planner.build(playbook({"action": "cache.clear"}), incident("orders"))


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        ({}, "needs the label 'level'"),
        ({"level": "TRACE"}, "is not an allowed value"),
        ({"level": "INFO\\n[evil]"}, "is not an allowed value"),
    ],
)
def test_a_label_filled_parameter_takes_only_the_values_the_step_allows(labels, error):
    inventory.resource("orders", "service", "orders-api")
    step = {
        "action": "service.set_log_level",
        "params": {"level": "{labels.level}"},
        "allow": {"level": {"values": ["INFO", "DEBUG"]}},
    }

    with pytest.raises(planner.PlanError, match=error):
        planner.build(playbook(step), incident("orders", labels))
    assert planner.build(playbook(step), incident("orders", {"level": "DEBUG"})).steps[0].params["level"] == "DEBUG"


def test_a_service_outside_the_inventory_cannot_be_planned():
    with pytest.raises(planner.PlanError, match="service 'ghost' is not in the inventory"):
        planner.build(playbook({"action": "sqlite.analyze"}), incident("ghost"))
