"""Credentials are masked wherever they are shown or recorded: audit data, API output, admin lists, logs.

A credential is kept in full only where GRACE must use it (the delivery to a webhook, a connection).
Everywhere else it is shown as ``****`` with a short SHA-256 fingerprint, so an operator can still
tell that a value changed, or that two are the same, without reading it.

- ``mask(value)``: a secret value (a password, a token, a key).
- ``mask_url(url)``: a URL that is itself the credential (a Slack webhook's): scheme and host kept,
  everything that authenticates (user info, path, query, fragment) masked.
- ``redact_url(url)``: a URL that may carry a credential (``postgres://user:pass@host/db``,
  ``?token=...``): the password and secret-named query values masked, the rest kept.
- ``mask_data(data, fields=...)``: a JSON-like document with the values of ``fields`` and of every
  secret-named key (password, token, secret, api_key...) masked, and URLs redacted.
- ``scrub(text, secrets)``: ``text`` (an error message) with each secret, and a URL secret's path
  as an HTTP client quotes it, masked.
- ``RedactingFilter``: a logging filter doing ``redact_text`` on every record.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "****"

# Key names whose values are credentials, wherever they appear in a document.
SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?$|secret|token|api[_-]?key|private[_-]?key|access[_-]?key|credential|authorization"
    r"|cookie|session[_-]?id|webhook[_-]?url|^dsn$",
    re.IGNORECASE,
)
# Query parameters that authenticate a URL (presigned and shared-access URLs sign with them).
_QUERY_SECRET = re.compile(rf"{SECRET_NAME.pattern}|signature|^sig$|^code$|^key$", re.IGNORECASE)
# In free text: a URL's user-info password, an Authorization value, a secret-named key=value or "key": "value".
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^@\s/]+)(?P<tail>@)", re.I)
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?:authorization[\"']?\s*[:=]\s*[\"']?)?(?:bearer|token|basic)\s+)(?P<secret>[A-Za-z0-9._~+/=-]{16,})",
    re.IGNORECASE,
)
_SECRET_PAIR = re.compile(
    r"(?P<head>\b[\w-]*(?:password|passwd|secret|api[_-]?key|access[_-]?key|private[_-]?key|token)[\w-]*"
    r"[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^\s\"'&,;}]+)",
    re.IGNORECASE,
)
# Webhook URLs whose path is the credential (Slack, and the /hooks/<key> form of Mattermost and others).
# urllib3 quotes the path alone in its errors ("... with url: /services/T0/B0/XXXX").
_WEBHOOK_PATH = re.compile(
    r"(?P<head>\bhttps?://[^/\s]+|\burl: )(?P<secret>/(?:services|hooks|webhookb2|api/webhooks)/[^\s)'\"]+)"
)


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def mask(value: Any) -> str:
    """``****`` with a fingerprint of the value; an empty value stays empty (nothing to hide)."""
    if value in (None, ""):
        return ""
    return f"{MASK} (sha256:{fingerprint(str(value))})"


def _host(parts) -> str:
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def mask_url(url: str) -> str:
    """A URL that is the credential: ``https://hooks.slack.com/**** (sha256:1a2b3c4d)``."""
    if not url:
        return ""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return mask(url)
    return f"{parts.scheme}://{_host(parts)}/{mask(url)}"


def redact_url(url: str) -> str:
    """A URL with its password and secret-named query values masked; the rest (host, path) kept."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{_host(parts)}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_QUERY_SECRET.search(key) for key, _ in pairs):
            query = urlencode([(key, MASK if _QUERY_SECRET.search(key) else value) for key, value in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_data(data: Any, *, fields: Iterable[str] = (), url_fields: Iterable[str] = ()) -> Any:
    """A copy of ``data`` with credentials masked: ``url_fields`` as credential URLs, ``fields`` and
    secret-named keys as values, every other string that holds a URL with a password redacted."""
    fields, url_fields = set(fields), set(url_fields)

    def walk(value: Any, key: str | None) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, key) for v in value]
        if key is not None and key in url_fields and isinstance(value, str):
            return mask_url(value)
        if key is not None and (key in fields or SECRET_NAME.search(key)) and not isinstance(value, bool):
            return mask(value) if value not in (None, "") else value
        if isinstance(value, str):
            return redact_text(value)
        return value

    return walk(data, None)


def redact_text(text: str) -> str:
    """Free text with credentials that look like credentials masked (URL passwords, tokens, webhook paths)."""
    if not text or not isinstance(text, str):
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    text = _WEBHOOK_PATH.sub(lambda m: f"{m['head']}/{mask(m['secret'])}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['head']}{MASK}", text)
    return _SECRET_PAIR.sub(lambda m: f"{m['head']}{MASK}", text)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` masked, and a secret URL's path (as HTTP clients quote
    it in their errors: ``... with url: /services/T0/B0/XXXX``) too."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        replacement = mask_url(secret) if "://" in secret else mask(secret)
        text = text.replace(secret, replacement)
        parts = urlsplit(secret) if "://" in secret else None
        if parts is not None and len(parts.path) > 1:
            tail = parts.path + (f"?{parts.query}" if parts.query else "")
            text = text.replace(tail, "/" + mask(secret)).replace(parts.path, "/" + mask(secret))
    return redact_text(text)


class RedactingFilter(logging.Filter):
    """Masks credentials in every log record that passes through a handler (message and traceback text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logged as it is
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
