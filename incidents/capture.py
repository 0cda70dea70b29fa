"""Exception capture for a monitored Django project: unhandled exceptions and ERROR log records become incidents.

Two entry points, both non-blocking (they only put an event on a bounded in-memory queue; a full queue
drops and counts):

* ``incidents.capture.ExceptionCaptureMiddleware``: unhandled exceptions of views;
* ``incidents.capture.IncidentLogHandler``: ERROR (and worse) log records.

A daemon thread delivers the queue. With ``GRACE_CAPTURE_URL`` set, events are POSTed to GRACE's
``/api/incidents/`` with ``GRACE_CAPTURE_TOKEN`` (any Django project); without it they are ingested in-process
(GRACE watching itself). Delivery never recurses: records logged by the delivery thread, or by this module's
logger, are never captured, so GRACE failing to record an incident cannot produce another one.

The fingerprint of an exception is its type plus the module and function of every frame (line numbers left
out, so a deploy that shifts lines keeps the same incident). This module imports nothing of GRACE's at import
time, so another project can use it with only Django and ``requests`` installed.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import traceback
from types import TracebackType
from typing import Any

logger = logging.getLogger("incidents.capture")

_CAPTURED_ATTR = "_grace_captured"


def exception_fingerprint(exc: BaseException) -> str:
    parts = [f"{type(exc).__module__}.{type(exc).__qualname__}"]
    tb: TracebackType | None = exc.__traceback__
    for frame, _ in traceback.walk_tb(tb):
        parts.append(f"{frame.f_globals.get('__name__', '?')}:{frame.f_code.co_name}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _setting(name: str, default: Any) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


class _Deliverer:
    """One bounded queue and one daemon thread per process."""

    def __init__(self) -> None:
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0
        self.delivered = 0
        self.failed = 0

    def submit(self, event: dict) -> bool:
        if threading.current_thread() is self._thread:
            return False  # never capture what delivery itself logs
        self._ensure_started()
        try:
            self._queue.put_nowait(event)  # type: ignore[union-attr]
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def is_delivery_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._queue = queue.Queue(maxsize=_setting("GRACE_CAPTURE_QUEUE_SIZE", 1000))
            self._thread = threading.Thread(target=self._run, name="grace-capture", daemon=True)
            self._thread.start()

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far was handled (tests, shutdown hooks)."""
        if self._queue is None:
            return True
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()  # type: ignore[union-attr]
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            event = self._queue.get()  # type: ignore[union-attr]
            try:
                self._deliver(event)
                self.delivered += 1
            except Exception as exc:  # noqa: BLE001 - counted and logged; capture must never take the app down
                self.failed += 1
                logger.warning(
                    "could not deliver a captured %s to GRACE: %s: %s", event["kind"], type(exc).__name__, exc
                )
            finally:
                self._queue.task_done()  # type: ignore[union-attr]

    def _deliver(self, event: dict) -> None:
        url = _setting("GRACE_CAPTURE_URL", "")
        body = {key: event[key] for key in ("source", "title", "service", "message", "severity", "labels")}
        body["environment"] = event["environment"]
        body["fingerprint"] = event["fingerprint"]
        if url:
            import requests

            token = _setting("GRACE_CAPTURE_TOKEN", "")
            # A channel token (grc_...) makes the incidents the channel's, with its source (exception); a user
            # API token makes them that user's, with the source "api".
            scheme = "Bearer" if token.startswith("grc_") else "Token"
            headers = {"Authorization": f"{scheme} {token}"}
            response = requests.post(url, json=body, headers=headers, timeout=_setting("GRACE_CAPTURE_TIMEOUT", 3.0))
            response.raise_for_status()
            return
        from django.db import connections

        from incidents.services import Signal, ingest

        try:
            ingest(Signal(**body, raw={"kind": event["kind"], "traceback": event["traceback"]}), actor="system:capture")
        finally:
            connections.close_all()  # this thread's own connections: captures are rare, hold nothing open


deliverer = _Deliverer()


def _event(kind: str, title: str, message: str, fingerprint: str, labels: dict, tb: str) -> dict:
    return {
        "kind": kind,
        "source": "exception",
        "title": title[:500],
        "message": message[:20_000],
        "severity": "error",
        "service": _setting("GRACE_CAPTURE_SERVICE", ""),
        "environment": _setting("GRACE_CAPTURE_ENVIRONMENT", "production"),
        "labels": {key: str(value)[:500] for key, value in labels.items()},
        "fingerprint": fingerprint,
        "traceback": tb[-8000:],
    }


def capture_exception(exc: BaseException, **labels: Any) -> bool:
    """Queue an exception for GRACE (once per exception object). Returns False when dropped or repeated."""
    if getattr(exc, _CAPTURED_ATTR, False) or deliverer.is_delivery_thread():
        return False
    try:
        setattr(exc, _CAPTURED_ATTR, True)
    except AttributeError:
        pass  # exceptions with __slots__: they may be captured twice, which dedupes to one incident
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    labels = {"exception": kind, **labels}
    return deliverer.submit(_event("exception", f"{kind}: {exc}", text, exception_fingerprint(exc), labels, text))


class ExceptionCaptureMiddleware:
    """Capture unhandled view exceptions; Django's own handling (500 page, logging) is unchanged."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        capture_exception(exception, method=request.method, path=request.path[:200])
        return None


class IncidentLogHandler(logging.Handler):
    """A logging handler that turns ERROR records into incidents (exceptions keep their frame fingerprint)."""

    def __init__(self, level: int = logging.ERROR):
        super().__init__(level)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("incidents.capture") or deliverer.is_delivery_thread():
            return
        try:
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                capture_exception(exc, logger=record.name)
                return
            template = str(record.msg)
            fingerprint = hashlib.sha256(f"log\n{record.name}\n{template}".encode()).hexdigest()
            message = record.getMessage()
            labels = {"logger": record.name, "level": record.levelname}
            deliverer.submit(_event("log", f"{record.name}: {message}", message, fingerprint, labels, ""))
        except Exception:  # noqa: BLE001 - logging's own contract: report through handleError, never raise
            self.handleError(record)
