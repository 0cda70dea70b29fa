"""Alertmanager webhook deliveries (version 4) turned into signals and resolutions.

Both Alertmanagers of an HA pair deliver every alert; the fingerprint is computed from the alert's label
set (what Alertmanager's own fingerprint hashes), so the two deliveries land on one incident.
"""

from __future__ import annotations

from datetime import datetime

from incidents import channels, normalize, services
from incidents.choices import Severity, Source
from incidents.models import Channel
from incidents.services import Signal

SEVERITY_ALIASES = {
    "critical": Severity.CRITICAL,
    "page": Severity.CRITICAL,
    "high": Severity.CRITICAL,
    "error": Severity.ERROR,
    "major": Severity.ERROR,
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "minor": Severity.WARNING,
    "info": Severity.INFO,
    "informational": Severity.INFO,
    "low": Severity.INFO,
    "none": Severity.INFO,
}
# Alertmanager sends this as endsAt while an alert is firing.
ZERO_TIME = "0001-01-01T00:00:00Z"


def fingerprint(labels: dict[str, str]) -> str:
    return normalize.compute_fingerprint(Source.ALERTMANAGER, labels)


def to_signal(alert: dict, delivery: dict, channel: Channel | None = None) -> Signal:
    labels, annotations = alert["labels"], alert.get("annotations") or {}
    starts_at: datetime = alert["startsAt"]
    return Signal(
        source=Source.ALERTMANAGER,
        title=annotations.get("summary") or labels.get("alertname") or "Alertmanager alert",
        service=labels.get("service") or labels.get("job") or labels.get("instance") or "",
        message=annotations.get("description") or annotations.get("summary") or "",
        severity=SEVERITY_ALIASES.get(labels.get("severity", "warning").lower(), Severity.WARNING),
        environment=labels.get("environment") or labels.get("env") or "",
        labels=labels,
        fingerprint=fingerprint(labels),
        raw={
            "receiver": delivery.get("receiver", ""),
            "groupKey": delivery.get("groupKey", ""),
            "externalURL": delivery.get("externalURL", ""),
            "status": alert["status"],
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts_at.isoformat(),
            "endsAt": alert.get("endsAt") or ZERO_TIME,
            "generatorURL": alert.get("generatorURL", ""),
            "fingerprint": alert.get("fingerprint", ""),
        },
        occurred_at=starts_at,
        channel=channel,
    )


def split(delivery: dict, channel: Channel) -> tuple[list[Signal], dict[str, str]]:
    """A validated delivery as the signals of its firing alerts and the resolutions (fingerprint: reason) of its
    resolved ones, all within ``channel``."""
    firing = [to_signal(alert, delivery, channel) for alert in delivery["alerts"] if alert["status"] == "firing"]
    resolutions = {
        fingerprint(alert["labels"]): f"Alertmanager reported the alert resolved (endsAt {alert.get('endsAt') or '?'})"
        for alert in delivery["alerts"]
        if alert["status"] == "resolved"
    }
    return firing, resolutions


def process_delivery(delivery: dict, *, channel: Channel | None = None, actor=None) -> dict:
    """Apply one validated delivery in one transaction: resolved alerts resolve, firing alerts are ingested,
    all within the channel the delivery came through (the built-in ``alertmanager`` channel by default)."""
    channel = channel or channels.builtin(channels.DEFAULT_ALERTMANAGER)
    firing, resolutions = split(delivery, channel)
    batch = services.record_batch(firing, resolutions=resolutions, channel=channel, actor=actor)
    return {
        "alerts": len(delivery["alerts"]),
        "created": sum(1 for result in batch.results if result.created),
        "absorbed": sum(1 for result in batch.results if not result.created),
        "resolved": len(batch.resolved),
        "incidents": sorted({result.incident.pk for result in batch.results} | set(batch.resolved)),
    }
