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

What it keeps of the full path: the channel is the one the token authenticates (nothing in the body can name
another), the body is bounded and decoded by ``grace_site.decoding`` rules, the brute-force lockout is checked,
the backlog bound answers 429, and the delivery is stored with one INSERT before the 202: the same statement
reads the channel the token's digest names (one round trip, its own transaction; on SQLite the rows of the
requests that wait together share one, ``GroupedWrites``). Two things are shared per
process instead of done per request: the wake-up of a consumer (``Waker``, after the commit) and, for a second,
the answer that a client address is not locked out (``LOCKOUT_RECHECK``).
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.http.request import split_domain_port, validate_host

from grace_site import auth_limits, writer_lock
from grace_site.decoding import declared_length
from incidents import channels, intake
from incidents.bodies import CHECKS, NotSure, decode
from incidents.choices import ChannelKind, DeliveryKind
from incidents.models import Delivery

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


# --- the one write ----------------------------------------------------------------------------------------------

# Authentication and the durable write in one statement (one round trip, its own transaction): the delivery is
# stored with the enabled channel of the endpoint's kind that the token's digest names (or, for
# GRACE_WEBHOOK_TOKEN, the built-in Alertmanager channel); no row comes back when none does.
_STORE = (
    "INSERT INTO incidents_delivery (kind, channel_id, raised_by_id, body, alerts, received_at, status, attempts, "
    "available_at, claim, lease_until, processed_at, result, error) "
    "SELECT %s, id, NULL, %s, %s, %s, 'pending', 0, %s, '', NULL, NULL, '{}', '' FROM incidents_channel "
    "WHERE enabled AND kind = %s AND (token_hash = %s OR (%s AND builtin AND name = %s)) "
    "ORDER BY id LIMIT 1 RETURNING id"
)
_AT = Delivery._meta.get_field("received_at")


def store(kind: str, channel_kind: str, token: str, body: str, alerts: int, received_at: datetime) -> int | None:
    """Store one delivery for the channel ``token`` authenticates; its id, or None when no channel has it."""
    env_token = settings.GRACE_WEBHOOK_TOKEN
    env_match = channel_kind == ChannelKind.ALERTMANAGER and bool(env_token)
    env_match = env_match and hmac.compare_digest(token.encode(), env_token.encode())
    digest = channels.digest(token) if token.startswith(channels.TOKEN_PREFIX) else ""
    if not env_match and not digest:
        return None
    at = _AT.get_db_prep_save(received_at, connection)
    params = [kind, body, alerts, at, at, channel_kind, digest or None, env_match, channels.DEFAULT_ALERTMANAGER]
    if connection.vendor == "sqlite":
        return _grouped.store(params)
    with connection.cursor() as cursor:
        cursor.execute(_STORE, params)
        row = cursor.fetchone()
    return row[0] if row else None


class _Slot:
    __slots__ = ("params", "done", "delivery_id", "error")

    def __init__(self, params: list) -> None:
        self.params, self.done, self.delivery_id, self.error = params, False, None, None


class GroupedWrites:
    """SQLite has one writer, and its busy handler makes a waiting writer sleep and retry: the request threads of
    a process store their deliveries together instead. Each request queues its row and waits for this process's
    turn at the writer; whichever request gets the turn inserts every queued row in one transaction, and each
    request answers once its own row is committed. When that transaction fails, each row is tried again in a
    transaction of its own, so a failure is only its own request's (a 503: nothing of it was stored). One
    request per process waits for SQLite's lock, and takes it once for them all."""

    def __init__(self) -> None:
        self._turn = threading.Lock()
        self._queued: list[_Slot] = []
        self._queue_lock = threading.Lock()

    def store(self, params: list) -> int | None:
        slot = _Slot(params)
        with self._queue_lock:
            self._queued.append(slot)
        with self._turn:
            if not slot.done:
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._write(batch)
        if slot.error is not None:
            raise slot.error
        return slot.delivery_id

    def _write(self, batch: list[_Slot]) -> None:
        try:
            self._insert(batch)
        except DatabaseError:
            if len(batch) == 1:
                batch[0].error = sys.exc_info()[1]
            else:  # one row's failure does not fail the others: each is tried again on its own
                for slot in batch:
                    try:
                        self._insert([slot])
                    except DatabaseError as exc:
                        slot.error = exc
        finally:
            for slot in batch:
                slot.done = True

    @staticmethod
    def _insert(batch: list[_Slot]) -> None:
        ids = []
        with writer_lock.atomic(), connection.cursor() as cursor:
            for slot in batch:
                cursor.execute(_STORE, slot.params)
                row = cursor.fetchone()
                ids.append(row[0] if row else None)
        for slot, delivery_id in zip(batch, ids, strict=True):  # only once committed
            slot.delivery_id = delivery_id


_grouped = GroupedWrites()


# --- what the request path hands off ------------------------------------------------------------------------------


class Waker:
    """Wakes a consumer for the deliveries this process stored, from a thread of its own: the request that
    stored one only pokes it (no round trip to Redis on the request path). Each poke is followed by a wake-up
    sent after it, so a stored delivery is never left without one; pokes that come together share it."""

    def __init__(self) -> None:
        self._poked = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def poke(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="grace-intake-waker", daemon=True)
                    self._thread.start()
        self._poked.set()

    def _run(self) -> None:
        while True:
            self._poked.wait()
            self._poked.clear()
            intake.wake()  # logs and leaves it to the beat pass when Redis is down
            time.sleep(WAKE_EVERY)


# At most one wake-up round trip per process every 20 ms: while a consumer runs, each one only finds its key taken.
WAKE_EVERY = 0.02
waker = Waker()

# Client addresses found not locked out, and until when that answer is used (LOCKOUT_RECHECK seconds): a lockout
# that starts meanwhile reaches the light path within that time (wrong tokens are still counted by Django, each).
LOCKOUT_RECHECK = 1.0
_unlocked: dict[tuple[str, str], float] = {}


def _not_locked_out(environ: dict, limit_name: str) -> bool:
    request = _Request(environ)
    key = (auth_limits.client_address(request), limit_name)
    now = time.monotonic()
    if _unlocked.get(key, 0.0) > now:
        return True
    try:
        auth_limits.check(request, channel=limit_name)
    except auth_limits.Locked:
        _unlocked.pop(key, None)
        return False
    if len(_unlocked) > 10_000:
        _unlocked.clear()
    _unlocked[key] = now + LOCKOUT_RECHECK
    return True


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
        length = declared_length(environ.get("CONTENT_LENGTH"))
        if length is None or length > settings.GRACE_API_MAX_BODY_BYTES:
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # Django reads it again if it answers
        received_at = datetime.now(UTC)
        if not _not_locked_out(environ, limit_name):
            return None
        try:
            if intake.backlog_recheck_due():
                close_old_connections()  # this thread's connection: a broken or expired one is replaced
            intake.check_backlog()
        except intake.Backlogged as exc:
            return "429 Too Many Requests", {"detail": str(exc)}, [("Retry-After", str(exc.retry_after))]
        try:
            alerts = CHECKS[kind](decode(body))
        except NotSure:
            return None
        try:
            delivery_id = store(kind, channel_kind, token.strip(), body.decode("utf-8"), alerts, received_at)
        except DatabaseError:
            logger.exception("intake: could not store a delivery")
            connection.close()  # the next request opens a fresh connection
            return "503 Service Unavailable", {"detail": "The database is unavailable: nothing was stored."}, []
        if delivery_id is None:
            return None  # no channel of this kind has the token: Django counts it and answers 401
        waker.poke()  # after the commit: a consumer is on its way (one message however many ask)
        location = f"/api/deliveries/{delivery_id}/"
        answer = {"delivery": delivery_id, "status": "pending", "alerts": alerts, "url": location}
        return "202 Accepted", answer, [("Location", location)]

    @staticmethod
    def _host_allowed(environ: dict) -> bool:
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        domain, _port = split_domain_port(host)
        return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)
