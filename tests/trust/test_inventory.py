"""The service inventory: a declarative catalogue, validated field by field, applied idempotently and audited."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from approvals.models import AuditEvent
from incidents import inventory
from incidents.models import Resource, Service

pytestmark = pytest.mark.django_db

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "inventory.example.yaml"


def apply(path, *flags: str) -> str:
    out = io.StringIO()
    call_command("grace_inventory", "apply", str(path), *flags, stdout=out)
    return out.getvalue()


def snapshot_rows() -> list:
    services = list(Service.objects.order_by("name").values("name", "owner", "environment", "tier_floor", "hosts"))
    resources = list(
        Resource.objects.order_by("service__name", "name").values(
            "service__name", "name", "kind", "target", "scope", "host"
        )
    )
    return [services, resources]


def test_applying_the_shipped_example_twice_changes_nothing_the_second_time():
    first = apply(EXAMPLE)
    rows = snapshot_rows()
    events = AuditEvent.objects.count()

    second = apply(EXAMPLE)

    assert "11 to create" in first and "create resource orders/db" in first
    assert "0 to create, 0 to update, 0 to delete" in second
    assert snapshot_rows() == rows
    assert AuditEvent.objects.count() == events  # nothing changed, nothing audited
    orders = Service.objects.get(name="orders")
    assert (orders.environment, orders.tier_floor, orders.hosts) == ("production", 2, ["db-1"])
    db = orders.resources.get(name="db")
    assert (db.kind, db.target, db.host) == ("sqlite", "/srv/managed/orders/orders.sqlite3", "db-1")
    web = Resource.objects.get(service__name="shop-web", name="web")
    assert web.scope == {"context": "staging", "namespace": "shop"}


def test_every_change_the_catalogue_makes_is_audited_with_before_and_after(tmp_path):
    apply(EXAMPLE)
    document = yaml.safe_load(EXAMPLE.read_text())
    document["services"][0]["tier_floor"] = 3
    document["services"][0]["resources"][0]["target"] = "/srv/managed/orders/v2.sqlite3"
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(document))

    output = apply(changed)

    assert "update service orders" in output and "update resource orders/db" in output
    service_event = AuditEvent.objects.filter(action="inventory.service_saved").latest("at")
    assert service_event.data["changes"]["tier_floor"] == {"before": 2, "after": 3}
    resource_event = AuditEvent.objects.filter(action="inventory.resource_saved").latest("at")
    assert resource_event.data["changes"]["target"] == {
        "before": "/srv/managed/orders/orders.sqlite3",
        "after": "/srv/managed/orders/v2.sqlite3",
    }
    assert resource_event.actor == "system:grace_inventory"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["services"][1]["resources"][0].update(namespace="Not_A_Label"),
            "services[1] (shop-web).resources[0] (web).scope: namespace must be a namespace",
        ),
        (
            lambda d: d["services"][0]["resources"][0].update(target="relative/orders.sqlite3"),
            "services[0] (orders).resources[0] (db).target: must be an absolute path",
        ),
        (
            lambda d: d["services"][0]["resources"][1].update(target="/srv/../etc"),
            "services[0] (orders).resources[1] (cache).target: must not contain '..'",
        ),
        (lambda d: d["services"][0].update(tier_floor=0), "services[0] (orders).tier_floor:"),
        (
            lambda d: d["services"][0]["resources"][0].update(kind="mainframe"),
            "services[0] (orders).resources[0] (db).kind:",
        ),
        (
            lambda d: d["services"][0]["resources"][0].update(host="db-9"),
            "services[0] (orders).resources[0] (db).host: 'db-9' is not one of the service's hosts",
        ),
        (lambda d: d["services"][0].update(colour="blue"), "services[0] (orders).colour: unknown field"),
        (
            lambda d: d["services"][1]["resources"].append({"name": "web", "kind": "http", "target": "http://x/"}),
            "services[1] (shop-web).resources[4] (web).name: 'web' is listed twice",
        ),
    ],
)
def test_a_bad_catalogue_names_the_entry_and_field_and_changes_nothing(tmp_path, change, message):
    apply(EXAMPLE)
    rows = snapshot_rows()
    events = AuditEvent.objects.count()
    document = yaml.safe_load(EXAMPLE.read_text())
    document["services"][0]["owner"] = "someone else"  # a valid change that must not land either
    change(document)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))

    with pytest.raises(CommandError) as raised:
        apply(bad)

    assert message in str(raised.value)
    assert "nothing was changed" in str(raised.value)
    assert snapshot_rows() == rows
    assert AuditEvent.objects.count() == events


def test_a_dry_run_reports_and_changes_nothing():
    output = apply(EXAMPLE, "--dry-run")

    assert "would create service orders" in output
    assert not Service.objects.exists()


def test_prune_deletes_what_the_catalogue_no_longer_lists(tmp_path):
    apply(EXAMPLE)
    document = yaml.safe_load(EXAMPLE.read_text())
    del document["services"][1]
    document["services"][0]["resources"] = document["services"][0]["resources"][:1]
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump(document))

    kept = apply(smaller)
    assert Service.objects.filter(name="shop-web").exists()  # without --prune nothing is deleted
    assert "0 to delete" in kept

    pruned = apply(smaller, "--prune")

    assert "delete service shop-web" in pruned and "delete resource orders/cache" in pruned
    assert list(Service.objects.values_list("name", flat=True)) == ["orders"]
    assert list(Resource.objects.values_list("name", flat=True)) == ["db"]
    deleted = AuditEvent.objects.get(action="inventory.service_deleted")
    assert deleted.data["before"]["name"] == "shop-web" and len(deleted.data["resources"]) == 4


def test_paths_are_stored_in_one_canonical_spelling():
    service = inventory.save_service(Service(name="s", environment="staging"))
    resource = inventory.save_resource(Resource(service=service, name="db", kind="sqlite", target="/srv//a/./b.db"))

    assert resource.target == "/srv/a/b.db"


def test_an_unreadable_or_invalid_file_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("services: [unclosed")

    with pytest.raises(CommandError, match="is not valid YAML"):
        apply(broken)
    with pytest.raises(CommandError, match="cannot be read"):
        apply(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}")
    with pytest.raises(CommandError, match="'services' list"):
        apply(empty)


def test_the_api_writes_the_inventory_through_the_audited_service_layer(api_client, admin_user):
    api_client.force_authenticate(admin_user)

    made = api_client.post(
        "/api/inventory/services/", {"name": "billing", "environment": "production", "tier_floor": 2}, format="json"
    )
    bad = api_client.post(
        "/api/inventory/resources/",
        {"service": "billing", "name": "db", "kind": "sqlite", "target": "billing.db"},
        format="json",
    )
    good = api_client.post(
        "/api/inventory/resources/",
        {"service": "billing", "name": "db", "kind": "sqlite", "target": "/srv/managed/billing.db"},
        format="json",
    )

    assert made.status_code == 201, made.json()
    assert bad.status_code == 400 and "target" in bad.json()
    assert good.status_code == 201, good.json()
    assert good.json()["locator"] == "sqlite:/srv/managed/billing.db"
    assert AuditEvent.objects.filter(action="inventory.resource_created", actor=admin_user.username).count() == 1
    listed = api_client.get("/api/inventory/services/", {"name": "billing"}).json()["results"]
    assert [r["name"] for r in listed[0]["resources"]] == ["db"]


def test_reading_the_inventory_needs_the_view_permission(api_client, django_user_model):
    user = django_user_model.objects.create_user("nobody", password="pw-nobody-123456")
    api_client.force_authenticate(user)

    assert api_client.get("/api/inventory/services/").status_code == 403
    assert api_client.post("/api/inventory/services/", {"name": "x", "environment": "dev"}).status_code == 403
