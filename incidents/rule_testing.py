"""The admin's "test this rule against the selected incidents": what one rule would match, and what wins now."""

from __future__ import annotations

from incidents import diagnosis
from incidents.models import DiagnosisRule, Incident
from incidents.services import Signal


def signal_of(incident: Incident) -> Signal:
    """The signal an incident was opened from, as the diagnosis engine sees it."""
    return Signal(
        source=incident.source,
        title=incident.title,
        service=incident.service,
        message=incident.message,
        severity=incident.severity,
        environment=incident.environment,
        labels=incident.labels,
        fingerprint=incident.fingerprint,
        raw=incident.raw_payload,
    )


def test_rule(rule: DiagnosisRule, incidents: list[Incident]) -> list[dict]:
    rows = []
    for incident in incidents:
        signal = signal_of(incident)
        matched = diagnosis.explain(rule, signal)
        current = diagnosis.diagnose(signal)
        rows.append(
            {
                "incident": incident,
                "matches": matched is not None,
                "evidence": matched,
                "current_code": current.code,
                "current_rule": current.evidence.get("rule_name"),
            }
        )
    return rows
