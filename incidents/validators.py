"""Field validators for diagnosis rules and sweep targets (each error names what is wrong)."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError

# Inventory names: services as alerts name them, resource and channel names, environments, hosts.
SERVICE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$"
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
HOST_RE = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"

THRESHOLD_OPS = (">", ">=", "<", "<=", "==", "!=")
THRESHOLD_SCOPES = ("labels", "annotations")


def validate_regex(value: str) -> None:
    if not value:
        return
    try:
        re.compile(value)
    except re.error as exc:
        raise ValidationError(f"not a valid regular expression: {exc}", code="invalid_regex") from None


def validate_label_equals(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("must be an object of label name to exact value", code="invalid")
    for key, expected in value.items():
        if not isinstance(key, str) or not key or not isinstance(expected, str):
            raise ValidationError(f"label {key!r}: names and values must be non-empty strings", code="invalid")


def validate_label_regex(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("must be an object of label name to regular expression", code="invalid")
    for key, pattern in value.items():
        if not isinstance(key, str) or not key or not isinstance(pattern, str):
            raise ValidationError(f"label {key!r}: names and patterns must be non-empty strings", code="invalid")
        try:
            re.compile(pattern)
        except re.error as exc:
            message = f"label {key!r}: not a valid regular expression: {exc}"
            raise ValidationError(message, code="invalid_regex") from None


def validate_thresholds(value: Any) -> None:
    """A list of ``{"field": "labels.wal_bytes" | "annotations.value", "op": ">=", "value": 1048576}``."""
    if not isinstance(value, list):
        raise ValidationError("must be a list of {field, op, value} objects", code="invalid")
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"field", "op", "value"}:
            raise ValidationError(f"item {index}: needs exactly the keys field, op and value", code="invalid")
        scope, _, name = str(item["field"]).partition(".")
        if scope not in THRESHOLD_SCOPES or not name:
            raise ValidationError(f"item {index}: field must be labels.<name> or annotations.<name>", code="invalid")
        if item["op"] not in THRESHOLD_OPS:
            raise ValidationError(f"item {index}: op must be one of {', '.join(THRESHOLD_OPS)}", code="invalid")
        if isinstance(item["value"], bool) or not isinstance(item["value"], int | float):
            raise ValidationError(f"item {index}: value must be a number", code="invalid")


def validate_hosts(value: Any) -> None:
    if not isinstance(value, list):
        raise ValidationError("must be a list of host names", code="invalid")
    for host in value:
        if not isinstance(host, str) or not re.fullmatch(HOST_RE, host):
            raise ValidationError(f"{host!r} is not a host name (letters, digits, '.', '_', '-')", code="invalid")
    if len(set(value)) != len(value):
        raise ValidationError("lists a host twice", code="invalid")
