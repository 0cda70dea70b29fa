"""Alertmanager webhook deliveries (version 4) turned into signals and resolutions.

Both Alertmanagers of an HA pair deliver every alert; the fingerprint is computed from the alert's label
set (what Alertmanager's own fingerprint hashes), so the two deliveries land on one incident.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from incidents import normalize, services
from incidents.choices import Severity, Source
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


def to_signal(alert: dict, delivery: dict) -> Signal:
    labels, annotations = alert["labels"], alert.get("annotations") or {}
    starts_at: datetime = alert["startsAt"]
    return Signal(
        source=Source.ALERTMANAGER,
        title=annotations.get("summary") or labels.get("alertname") or "Alertmanager alert",
        service=labels.get("service") or labels.get("job") or labels.get("instance") or "",
        message=annotations.get("description") or annotations.get("summary") or "",
        severity=SEVERITY_ALIASES.get(labels.get("severity", "warning").lower(), Severity.WARNING),
        environment=labels.get("environment") or labels.get("env") or "production",
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
    )


def process_delivery(delivery: dict, *, actor=None) -> dict:
    """Apply one validated delivery in one transaction: firing alerts are ingested, resolved ones resolve."""
    firing = [to_signal(alert, delivery) for alert in delivery["alerts"] if alert["status"] == "firing"]
    resolved = [alert for alert in delivery["alerts"] if alert["status"] == "resolved"]
    incident_ids: set[int] = set()
    resolved_count = 0
    with transaction.atomic():
        results = services.ingest_many(firing, actor=actor) if firing else []
        incident_ids.update(result.incident.pk for result in results)
        for alert in resolved:
            incident_id = services.active_incident_id(fingerprint(alert["labels"]))
            if incident_id is None:
                continue
            reason = f"Alertmanager reported the alert resolved (endsAt {alert.get('endsAt') or 'unknown'})"
            if services.resolve(incident_id, actor=actor, reason=reason):
                resolved_count += 1
                incident_ids.add(incident_id)
    return {
        "alerts": len(delivery["alerts"]),
        "created": sum(1 for result in results if result.created),
        "absorbed": sum(1 for result in results if not result.created),
        "resolved": resolved_count,
        "incidents": sorted(incident_ids),
    }
