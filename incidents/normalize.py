"""Normalization and fingerprinting of signals, shared by every intake path.

Limits come from settings (GRACE_INTAKE_*); a value over a limit is a ValidationError naming the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from grace_site.decoding import show, text_problem
from incidents.choices import Severity, Source

FINGERPRINT_RE = re.compile(r"^[A-Za-z0-9:._-]{1,64}$")
MAX_TITLE = 500
MAX_SERVICE = 200
MAX_ENVIRONMENT = 50
MAX_MESSAGE = 20_000


# Annotations (Alertmanager's summaries and descriptions) may be longer than labels.
ANNOTATION_BYTES_FACTOR = 16


def clean_labels(labels: Any, field: str = "labels", *, annotations: bool = False) -> dict[str, str]:
    """Labels as a flat ``{str: str}`` map within the configured count and size limits.

    ``annotations=True`` allows values ANNOTATION_BYTES_FACTOR times longer than labels.
    """
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise ValidationError({field: "must be an object of label name to string value"})
    max_count = settings.GRACE_INTAKE_MAX_LABELS
    max_bytes = settings.GRACE_INTAKE_MAX_LABEL_BYTES * (ANNOTATION_BYTES_FACTOR if annotations else 1)
    if len(labels) > max_count:
        raise ValidationError({field: f"at most {max_count} labels are accepted, got {len(labels)}"})
    cleaned: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not key:
            raise ValidationError({field: "label names must be non-empty strings"})
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValidationError({field: f"label {show(key)} must be a string or a number"})
        text = value if isinstance(value, str) else json.dumps(value)
        for what, part in (("name", key), ("value", text)):
            problem = text_problem(part)
            if problem:
                raise ValidationError({field: f"label {show(key)}: the {what} {problem}"})
        if len(key.encode()) + len(text.encode()) > max_bytes:
            raise ValidationError({field: f"label {show(key)} is over {max_bytes} bytes (name plus value)"})
        cleaned[key] = text
    return cleaned


def check_choice(value: str, choices: type, field: str) -> str:
    if value not in choices.values:
        raise ValidationError({field: f"{value!r} is not one of {', '.join(choices.values)}"})
    return value


def check_source(value: str) -> str:
    return check_choice(value, Source, "source")


def check_severity(value: str) -> str:
    return check_choice(value, Severity, "severity")


def check_fingerprint(value: str) -> str:
    if not isinstance(value, str) or not FINGERPRINT_RE.match(value):
        raise ValidationError({"fingerprint": "1 to 64 characters of letters, digits, ':', '.', '_' or '-'"})
    return value


def compute_fingerprint(*parts: Any) -> str:
    """sha256 over a canonical JSON encoding of the parts (labels are sorted by name)."""
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def cap_raw(raw: Any) -> dict:
    """The raw payload as received, or a truncated preview when it is over GRACE_INTAKE_RAW_MAX_BYTES."""
    if not raw:
        return {}
    encoded = json.dumps(raw, separators=(",", ":"), ensure_ascii=False, default=str)
    limit = settings.GRACE_INTAKE_RAW_MAX_BYTES
    size = len(encoded.encode())
    if size <= limit:
        return raw if isinstance(raw, dict) else {"value": raw}
    return {"truncated": True, "bytes": size, "preview": encoded.encode()[:limit].decode(errors="ignore")}
