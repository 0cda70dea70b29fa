"""Intake bodies checked without DRF: a strict subset of what the intake serializers accept, read the same way.

``validate_alertmanager`` and ``validate_incident`` give what ``AlertmanagerWebhookSerializer`` and
``IncidentCreateSerializer`` would give for the fields intake reads (tests/incidents/test_fastpath.py checks
that on generated bodies), about twenty times faster. A body they cannot vouch for raises ``NotSure``: the
serializer then decides (and answers 400 with the field errors when it refuses). The light intake path and the
consumers use them; the serializers stay the reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from rest_framework import serializers

from grace_site import decoding
from incidents import normalize
from incidents.alertmanager import SEVERITY_ALIASES
from incidents.choices import DeliveryKind, Severity, Source


class NotSure(Exception):
    """The fast check cannot vouch for the body: Django's serializers decide."""


_STARTS_AT = serializers.DateTimeField()
_ALERT_STATUSES = ("firing", "resolved")
_SOURCES = set(Source.values)
_SEVERITIES = set(Severity.values)


def _labels(value, *, annotations: bool = False, allow_empty: bool = True) -> dict[str, str]:
    if not isinstance(value, dict) or (not allow_empty and not value):
        raise NotSure
    for item in value.values():
        if not isinstance(item, str):
            raise NotSure
    try:
        return normalize.clean_labels(value, annotations=annotations)
    except ValidationError:
        raise NotSure from None


def _text(data: dict, key: str, *, max_length: int | None = None, trim: bool = True) -> str:
    """The field as the serializer's CharField gives it (blank when absent)."""
    if key not in data:
        return ""
    value = data[key]
    if not isinstance(value, str) or (max_length is not None and len(value) > max_length):
        raise NotSure
    return value.strip() if trim else value


def validate_alertmanager(data) -> dict:
    """What ``AlertmanagerWebhookSerializer`` would give for a webhook body (the fields intake reads); ``NotSure``
    when it cannot vouch for the body (the serializer then decides)."""
    if not isinstance(data, dict) or data.get("version") != "4" or data.get("status") not in _ALERT_STATUSES:
        raise NotSure
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or len(alerts) > settings.GRACE_INTAKE_MAX_ALERTS:
        raise NotSure
    validated = {
        "version": "4",
        "status": data["status"],
        "receiver": _text(data, "receiver"),
        "externalURL": _text(data, "externalURL"),
        "groupKey": _text(data, "groupKey"),
        "groupLabels": _labels(data["groupLabels"]) if "groupLabels" in data else {},
        "commonLabels": _labels(data["commonLabels"]) if "commonLabels" in data else {},
        "commonAnnotations": _labels(data["commonAnnotations"], annotations=True)
        if "commonAnnotations" in data
        else {},
    }
    if "truncatedAlerts" in data:
        truncated = data["truncatedAlerts"]
        if type(truncated) is not int or truncated < 0:
            raise NotSure
    validated["truncatedAlerts"] = data.get("truncatedAlerts", 0)
    validated["alerts"] = [_alert(alert) for alert in alerts]
    return validated


def _alert(alert) -> dict:
    if not isinstance(alert, dict) or alert.get("status") not in _ALERT_STATUSES:
        raise NotSure
    labels = _labels(alert.get("labels"), allow_empty=False)
    severity = labels.get("severity")
    if severity is not None and severity.lower() not in SEVERITY_ALIASES:
        raise NotSure
    starts_at = alert.get("startsAt")
    if not isinstance(starts_at, str):
        raise NotSure
    try:
        starts_at = _STARTS_AT.to_internal_value(starts_at)
    except (serializers.ValidationError, ValueError, OverflowError, TypeError):
        raise NotSure from None
    return {
        "status": alert["status"],
        "labels": labels,
        "annotations": _labels(alert["annotations"], annotations=True) if "annotations" in alert else {},
        "startsAt": starts_at,
        "endsAt": _text(alert, "endsAt"),
        "generatorURL": _text(alert, "generatorURL", max_length=2000),
        "fingerprint": _text(alert, "fingerprint", max_length=64),
    }


def validate_incident(data) -> dict:
    """What ``IncidentCreateSerializer`` would give for a signal; ``NotSure`` when it cannot vouch for it."""
    if not isinstance(data, dict):
        raise NotSure
    title = data.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > normalize.MAX_TITLE:
        raise NotSure
    validated = {"title": title.strip()}
    if "source" in data:
        if not isinstance(data["source"], str) or data["source"] not in _SOURCES:
            raise NotSure
        validated["source"] = data["source"]
    severity = data.get("severity", Severity.WARNING)
    if not isinstance(severity, str) or severity not in _SEVERITIES:
        raise NotSure
    validated["severity"] = severity
    validated["service"] = _text(data, "service", max_length=normalize.MAX_SERVICE)
    validated["environment"] = _text(data, "environment", max_length=normalize.MAX_ENVIRONMENT)
    validated["message"] = _text(data, "message", max_length=normalize.MAX_MESSAGE, trim=False)
    validated["labels"] = _labels(data["labels"]) if "labels" in data else {}
    if "fingerprint" in data:
        fingerprint = data["fingerprint"]
        if not isinstance(fingerprint, str) or fingerprint != fingerprint.strip():
            raise NotSure
        if not normalize.FINGERPRINT_RE.match(fingerprint):
            raise NotSure
        validated["fingerprint"] = fingerprint
    return validated


def check_alertmanager(data) -> int:
    """The number of alerts of a webhook body the serializer would accept; ``NotSure`` otherwise."""
    return len(validate_alertmanager(data)["alerts"])


def check_incident(data) -> int:
    """1 when the incidents API's serializer would accept the body; ``NotSure`` otherwise."""
    validate_incident(data)
    return 1


CHECKS: dict[str, Callable] = {DeliveryKind.ALERTMANAGER: check_alertmanager, DeliveryKind.INCIDENT: check_incident}


def decode(body: bytes):
    """The body as GRACE's JSON parser decodes it; ``NotSure`` where the parser would answer an error."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=decoding._reject_constant)
        decoding.check(
            data, max_depth=settings.GRACE_API_MAX_JSON_DEPTH, max_key_length=settings.GRACE_API_MAX_KEY_LENGTH
        )
    except (ValueError, UnicodeDecodeError, RecursionError, serializers.ValidationError):
        raise NotSure from None
    return data
