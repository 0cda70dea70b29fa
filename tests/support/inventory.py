"""Inventory and channel helpers for tests: the same service functions the admin, API and catalogue use."""

from __future__ import annotations

from django.utils import timezone

from incidents import channels, inventory
from incidents.choices import ChannelKind
from incidents.models import Channel, Delivery, Resource, Service


def service(name: str, *, environment: str = "staging", tier_floor: int = 1, hosts: list | None = None) -> Service:
    existing = Service.objects.filter(name=name).first()
    if existing is not None:
        return existing
    return inventory.save_service(
        Service(name=name, environment=environment, tier_floor=tier_floor, hosts=hosts or []), actor="test"
    )


def resource(
    service_name: str,
    kind: str,
    target: str,
    *,
    name: str | None = None,
    environment: str = "staging",
    tier_floor: int = 1,
    host: str = "",
    **scope: str,
) -> Resource:
    """Register ``target`` as a resource of ``service_name`` (created with ``environment`` when missing)."""
    owner = service(service_name, environment=environment, tier_floor=tier_floor)
    return inventory.save_resource(
        Resource(service=owner, name=name or kind, kind=kind, target=str(target), scope=scope, host=host),
        actor="test",
    )


def channel(name: str, *, kind: str = ChannelKind.API, source: str = "api", services=None, owner=None) -> tuple:
    """A new channel and its token."""
    made = channels.save(
        Channel(name=name, kind=kind, source=source, owner=owner, all_services=services is None),
        services=[service(s) for s in services or []],
        actor="test",
    )
    return made, channels.issue_token(made, actor="test")


def parked_delivery(channel: Channel, body: str, *, kind: str, alerts: int = 1, error: str) -> Delivery:
    """A delivery the consumers gave up on after its tries, as they leave it: parked with its error."""
    now = timezone.now()
    return Delivery.objects.create(
        kind=kind,
        channel=channel,
        body=body,
        alerts=alerts,
        received_at=now,
        available_at=now,
        status="parked",
        attempts=3,
        error=error,
    )
