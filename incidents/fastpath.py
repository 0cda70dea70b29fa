"""The light intake path: ``POST /api/webhooks/alertmanager/`` and ``POST /api/incidents/`` with a channel's
bearer token, answered 202 without Django's middleware stack or DRF.

``grace_site.wsgi`` mounts ``IntakeApp`` in front of Django (``GRACE_INTAKE_FAST_PATH``). It takes only the
common case and hands every other request to Django untouched (its body replayed), so every answer but the
202 and the backlog's 429 is Django's own:

- anything but ``POST`` on the two paths, a query string (``?wait=true``), a ``Grace-Wait`` header, a
  ``Token`` or session credential, a content type other than JSON, a host outside ``ALLOWED_HOSTS``, a body
  without a length or over ``GRACE_API_MAX_BODY_BYTES``: Django;
- a body that GRACE's JSON parser would refuse, or that the fast check below is not sure of: Django (which
  answers 400 with the field errors, or accepts it after all);
- a token that matches no enabled channel of the endpoint's kind, and any client address the brute-force
  limits have locked out: Django (which counts the failure, answers 401, 429 or 503, and audits a lockout).

What it keeps of the full path: the channel is the one the token authenticates (looked up in the same
transaction that stores the delivery; nothing in the body can name another), the body is bounded and decoded
by ``grace_site.decoding`` rules, the brute-force lockout is checked, the backlog bound answers 429, and the
delivery is stored with one INSERT before the 202. Concurrent requests of a process share that INSERT and its
commit (group commit): each request still waits for its own row to be durable.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection, transaction
from django.http.request import split_domain_port, validate_host
from rest_framework import serializers

from grace_site import auth_limits, decoding
from incidents import channels, intake, normalize
from incidents.alertmanager import SEVERITY_ALIASES
from incidents.choices import ChannelKind, DeliveryKind, Severity, Source
from incidents.models import Channel, Delivery

logger = logging.getLogger(__name__)

ROUTES = {
    "/api/webhooks/alertmanager/": (DeliveryKind.ALERTMANAGER, ChannelKind.ALERTMANAGER, "webhook"),
    "/api/incidents/": (DeliveryKind.INCIDENT, ChannelKind.API, "intake-token"),
}
# The headers Django's middleware (security, clickjacking) and DRF put on an API answer.
COMMON_HEADERS = [
    ("Content-Type", "application/json"),
    ("Vary", "Accept"),
    ("Allow", "POST, OPTIONS"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]


class NotSure(Exception):
    """The fast check cannot vouch for the body: Django's serializers decide."""


# --- the fast check: a strict subset of what the serializers accept -------------------------------------

_STARTS_AT = serializers.DateTimeField()
_ALERT_STATUSES = ("firing", "resolved")
_SOURCES = set(Source.values)
_SEVERITIES = set(Severity.values)


def _labels(value, *, annotations: bool = False, allow_empty: bool = True) -> None:
    if not isinstance(value, dict) or (not allow_empty and not value):
        raise NotSure
    for item in value.values():
        if not isinstance(item, str):
            raise NotSure
    try:
        normalize.clean_labels(value, annotations=annotations)
    except ValidationError:
        raise NotSure from None


def _text(data: dict, key: str, *, max_length: int | None = None) -> None:
    if key in data:
        value = data[key]
        if not isinstance(value, str) or (max_length is not None and len(value) > max_length):
            raise NotSure


def check_alertmanager(data) -> int:
    """The number of alerts of a webhook body the serializer would accept; ``NotSure`` otherwise."""
    if not isinstance(data, dict) or data.get("version") != "4" or data.get("status") not in _ALERT_STATUSES:
        raise NotSure
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or len(alerts) > settings.GRACE_INTAKE_MAX_ALERTS:
        raise NotSure
    for key in ("receiver", "externalURL", "groupKey"):
        _text(data, key)
    for key in ("groupLabels", "commonLabels"):
        if key in data:
            _labels(data[key])
    if "commonAnnotations" in data:
        _labels(data["commonAnnotations"], annotations=True)
    if "truncatedAlerts" in data:
        truncated = data["truncatedAlerts"]
        if type(truncated) is not int or truncated < 0:
            raise NotSure
    for alert in alerts:
        if not isinstance(alert, dict) or alert.get("status") not in _ALERT_STATUSES:
            raise NotSure
        labels = alert.get("labels")
        _labels(labels, allow_empty=False)
        severity = labels.get("severity")
        if severity is not None and severity.lower() not in SEVERITY_ALIASES:
            raise NotSure
        if "annotations" in alert:
            _labels(alert["annotations"], annotations=True)
        starts_at = alert.get("startsAt")
        if not isinstance(starts_at, str):
            raise NotSure
        try:
            _STARTS_AT.to_internal_value(starts_at)
        except (serializers.ValidationError, ValueError, OverflowError, TypeError):
            raise NotSure from None
        _text(alert, "endsAt")
        _text(alert, "generatorURL", max_length=2000)
        _text(alert, "fingerprint", max_length=64)
    return len(alerts)


def check_incident(data) -> int:
    """1 when the incidents API's serializer would accept the body; ``NotSure`` otherwise."""
    if not isinstance(data, dict):
        raise NotSure
    title = data.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > normalize.MAX_TITLE:
        raise NotSure
    if "source" in data and (not isinstance(data["source"], str) or data["source"] not in _SOURCES):
        raise NotSure
    if "severity" in data and (not isinstance(data["severity"], str) or data["severity"] not in _SEVERITIES):
        raise NotSure
    _text(data, "service", max_length=normalize.MAX_SERVICE)
    _text(data, "environment", max_length=normalize.MAX_ENVIRONMENT)
    _text(data, "message", max_length=normalize.MAX_MESSAGE)
    if "labels" in data:
        _labels(data["labels"])
    if "fingerprint" in data:
        fingerprint = data["fingerprint"]
        if not isinstance(fingerprint, str) or not normalize.FINGERPRINT_RE.match(fingerprint):
            raise NotSure
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


# --- group commit ------------------------------------------------------------------------------------------


class _Pending:
    __slots__ = ("kind", "channel_kind", "token", "body", "alerts", "received_at", "done", "delivery_id")

    def __init__(self, kind: str, channel_kind: str, token: str, body: str, alerts: int, received_at: datetime):
        self.kind, self.channel_kind, self.token, self.body = kind, channel_kind, token, body
        self.alerts, self.received_at = alerts, received_at
        self.done = threading.Event()
        self.delivery_id: int | None | BaseException = None


class GroupCommitter:
    """Stores deliveries for the request threads of one process: whatever arrived while the previous commit
    ran goes in the next one (one channel lookup, one multi-row INSERT, one commit), then each request is
    told its delivery id (or None: no channel has its token)."""

    MAX_GROUP = 500

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queue: list[_Pending] = []
        self._thread: threading.Thread | None = None

    def store(self, item: _Pending, timeout: float = 30.0) -> int | None:
        with self._lock:
            self._queue.append(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="grace-intake-commit", daemon=True)
                self._thread.start()
            self._lock.notify()
        if not item.done.wait(timeout):
            raise TimeoutError("the delivery was not stored in time")
        if isinstance(item.delivery_id, BaseException):
            raise item.delivery_id
        return item.delivery_id

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                group, self._queue = self._queue[: self.MAX_GROUP], self._queue[self.MAX_GROUP :]
            try:
                ids = _insert(group)
                for item, delivery_id in zip(group, ids, strict=True):
                    item.delivery_id = delivery_id
                if any(delivery_id is not None for delivery_id in ids):
                    intake.wake()
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request (its answer is a 500)
                logger.exception("intake: could not store %s deliveries", len(group))
                connection.close()
                for item in group:
                    item.delivery_id = exc
            finally:
                for item in group:
                    item.done.set()


_INSERT = (
    "INSERT INTO incidents_delivery (kind, channel_id, raised_by_id, body, alerts, received_at, status, attempts, "
    "available_at, claim, lease_until, processed_at, result, error) VALUES "
)
_ROW = "(%s, %s, NULL, %s, %s, %s, 'pending', 0, %s, '', NULL, NULL, '{}', '')"


def _channel_ids(group: list[_Pending]) -> dict[tuple[str, str], int]:
    """(token, channel kind) -> the enabled channel it authenticates, looked up in the storing transaction."""
    wanted = {(item.token, item.channel_kind) for item in group}
    found: dict[tuple[str, str], int] = {}
    env_token = settings.GRACE_WEBHOOK_TOKEN
    digests = {}
    for token, kind in wanted:
        if kind == ChannelKind.ALERTMANAGER and env_token and hmac.compare_digest(token.encode(), env_token.encode()):
            builtin = channels.builtin(channels.DEFAULT_ALERTMANAGER)
            if builtin.enabled:
                found[(token, kind)] = builtin.pk
        elif token.startswith(channels.TOKEN_PREFIX):
            digests[channels.digest(token)] = (token, kind)
    if digests:
        enabled = Channel.objects.filter(enabled=True, token_hash__in=list(digests))
        rows = enabled.values_list("pk", "token_hash", "kind")
        for pk, token_hash, kind in rows:
            token, wanted_kind = digests[token_hash]
            if kind == wanted_kind:
                found[(token, kind)] = pk
    return found


def _insert(group: list[_Pending]) -> list[int | None]:
    with transaction.atomic():
        known = _channel_ids(group)
        rows = [(item, known.get((item.token, item.channel_kind))) for item in group]
        authenticated = [(item, channel_id) for item, channel_id in rows if channel_id is not None]
        ids: dict[int, int] = {}
        if authenticated:
            params: list = []
            for item, channel_id in authenticated:
                at = _AT.get_db_prep_save(item.received_at, connection)
                params += [item.kind, channel_id, item.body, item.alerts, at, at]
            with connection.cursor() as cursor:
                # RETURNING gives the ids in the order of the VALUES (as bulk_create relies on).
                cursor.execute(_INSERT + ", ".join([_ROW] * len(authenticated)) + " RETURNING id", params)
                for (item, _), (pk,) in zip(authenticated, cursor.fetchall(), strict=True):
                    ids[id(item)] = pk
    return [ids.get(id(item)) for item in group]


_AT = Delivery._meta.get_field("received_at")
committer = GroupCommitter()


# --- the WSGI app ---------------------------------------------------------------------------------------------


class _Request:
    """What ``auth_limits`` reads of a request."""

    __slots__ = ("META",)

    def __init__(self, environ: dict):
        self.META = environ


def _answer(start_response, status: str, body: dict, extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    payload = json.dumps(body, separators=(",", ":")).encode()
    start_response(status, [*COMMON_HEADERS, ("Content-Length", str(len(payload))), *extra])
    return [payload]


class IntakeApp:
    """WSGI: the light intake path in front of ``fallback`` (Django), see the module."""

    def __init__(self, fallback: Callable) -> None:
        self.fallback = fallback

    def __call__(self, environ: dict, start_response):
        route = ROUTES.get(environ.get("PATH_INFO", ""))
        if route is None or environ.get("REQUEST_METHOD") != "POST":
            return self.fallback(environ, start_response)
        answer = self._take(environ, route)
        if answer is None:
            return self.fallback(environ, start_response)
        return _answer(start_response, *answer)

    def _take(self, environ: dict, route) -> tuple[str, dict, list] | None:
        """(status, body, headers), or None: Django answers (``wsgi.input`` rewound)."""
        kind, channel_kind, limit_name = route
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        content_type = environ.get("CONTENT_TYPE", "")
        if (
            environ.get("QUERY_STRING")
            or "HTTP_GRACE_WAIT" in environ
            or scheme.lower() != "bearer"
            or not token.strip()
            or not (content_type == "application/json" or content_type.startswith("application/json;"))
            or not self._host_allowed(environ)
        ):
            return None
        length = environ.get("CONTENT_LENGTH", "")
        if not length.isdigit() or int(length) > settings.GRACE_API_MAX_BODY_BYTES:
            return None
        body = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(body)  # Django reads it again if it answers
        received_at = datetime.now(UTC)
        try:
            auth_limits.check(_Request(environ), channel=limit_name)
        except auth_limits.Locked:
            return None
        try:
            close_old_connections()
            intake.check_backlog()
        except intake.Backlogged as exc:
            return "429 Too Many Requests", {"detail": str(exc)}, [("Retry-After", str(exc.retry_after))]
        try:
            alerts = CHECKS[kind](decode(body))
        except NotSure:
            return None
        item = _Pending(kind, channel_kind, token.strip(), body.decode("utf-8"), alerts, received_at)
        delivery_id = committer.store(item)
        if delivery_id is None:
            return None  # no channel of this kind has the token: Django counts it and answers 401
        location = f"/api/deliveries/{delivery_id}/"
        answer = {"delivery": delivery_id, "status": "pending", "alerts": alerts, "url": location}
        return "202 Accepted", answer, [("Location", location)]

    @staticmethod
    def _host_allowed(environ: dict) -> bool:
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        domain, _port = split_domain_port(host)
        return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)
