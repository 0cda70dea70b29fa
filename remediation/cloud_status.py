"""Is each cloud family usable right now, and as whom?

``family_status("aws")`` and ``all_status()`` probe the families (AWS: STS
caller identity; Docker: engine version; Kubernetes: server version) in
parallel threads with short client timeouts, and give up on a probe after
``GRACE_CLOUD_STATUS_TIMEOUT`` seconds, so the answer never hangs and never
raises: a family without credentials, daemon or cluster is reported
``"unavailable"`` with the reason. The last error any cloud action met is kept
in the cache (Redis) per family, so an operator sees what went wrong last
even when the family answers again.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from importlib import import_module

import redis
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from remediation.actions.base import ActionError, ActionUnavailable

logger = logging.getLogger(__name__)

FAMILIES: dict[str, str] = {
    "aws": "remediation.actions.aws",
    "docker": "remediation.actions.docker",
    "kubernetes": "remediation.actions.kubernetes",
}
LAST_ERROR_KEY = "grace:cloud:last-error:{family}"
LAST_ERROR_TTL = 7 * 24 * 3600


class NotConfigured(ActionUnavailable):
    """The family has nothing to talk to: no credentials, no engine address, no kubeconfig."""


def note_error(family: str, message: str) -> None:
    """Remember ``message`` as the family's last error (best effort: the cache may be down)."""
    try:
        cache.set(
            LAST_ERROR_KEY.format(family=family),
            {"at": timezone.now().isoformat(), "error": message[:1000]},
            LAST_ERROR_TTL,
        )
    except redis.RedisError as exc:
        logger.warning("cannot record the last %s error in the cache: %s", family, exc)


def last_error(family: str) -> dict | None:
    try:
        return cache.get(LAST_ERROR_KEY.format(family=family))
    except redis.RedisError as exc:
        logger.warning("cannot read the last %s error from the cache: %s", family, exc)
        return None


def _probe(family: str, timeout: float) -> dict:
    """Run one family's probe; every failure becomes a reason (this feeds an endpoint that must not raise)."""
    started = time.perf_counter()
    result: dict = {"configured": True, "reachable": False, "identity": {}, "reason": ""}
    try:
        result["identity"] = import_module(FAMILIES[family]).probe(timeout)
        result["reachable"] = True
    except NotConfigured as exc:
        result["reason"] = str(exc)
        result["configured"] = False
    except ActionUnavailable as exc:
        result["reason"] = str(exc)
    except ActionError as exc:
        result["reason"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a status probe reports every failure, by name, and never raises
        logger.warning("%s status probe failed", family, exc_info=True)
        result["reason"] = f"{family}: {type(exc).__name__}: {exc}"
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _report(family: str, probe: dict) -> dict:
    available = probe["reachable"]
    return {
        "family": family,
        "status": "available" if available else "unavailable",
        "configured": probe["configured"],
        "reachable": probe["reachable"],
        "identity": probe["identity"],
        "reason": probe["reason"],
        "last_error": last_error(family),
        "ms": probe.get("ms"),
    }


def _status(families: list[str]) -> dict[str, dict]:
    timeout = settings.GRACE_CLOUD_STATUS_TIMEOUT
    # Clients get the timeout for their own connects and reads; the deadline below catches the rest
    # (credential look-ups, DNS, a server that accepts and never answers).
    pool = ThreadPoolExecutor(max_workers=len(families), thread_name_prefix="cloud-status")
    deadline = time.monotonic() + timeout + 0.2
    futures = {family: pool.submit(_probe, family, timeout) for family in families}
    reports = {}
    try:
        for family, future in futures.items():
            try:
                probe = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                probe = {
                    "configured": True,
                    "reachable": False,
                    "identity": {},
                    "reason": f"{family}: no answer within {timeout:g} s",
                    "ms": round(timeout * 1000, 1),
                }
            reports[family] = _report(family, probe)
    finally:
        # Never wait for a stuck probe: its thread ends with its own client timeout.
        pool.shutdown(wait=False, cancel_futures=True)
    return reports


def family_status(family: str) -> dict:
    """``{"family", "status": "available"|"unavailable", "configured", "reachable", "identity", "reason", ...}``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown cloud family {family!r} (one of {', '.join(FAMILIES)})")
    return _status([family])[family]


def all_status() -> dict:
    """Every cloud family's status, probed concurrently (answers within GRACE_CLOUD_STATUS_TIMEOUT + 0.2 s)."""
    families = _status(list(FAMILIES))
    return {
        "families": families,
        "available": sorted(f for f, r in families.items() if r["status"] == "available"),
        "unavailable": sorted(f for f, r in families.items() if r["status"] != "available"),
    }
