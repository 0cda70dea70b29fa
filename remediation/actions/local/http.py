"""``http.probe``: observe an HTTP endpoint (status and latency); it changes nothing.

The host must be in ``GRACE_PROBE_ALLOWED_HOSTS``. On loopback (127.0.0.0/8, ::1, 0.0.0.0, ``localhost``)
only the ports in ``GRACE_PROBE_LOOPBACK_PORTS`` may be reached (GRACE's own web port by default): a
label-driven probe must not knock on Redis or PostgreSQL next door. The literal host is checked when
the parameters are validated; the addresses a name resolves to are checked again before connecting.
"""

from __future__ import annotations

import ipaddress
import socket
import time

import requests
from django.conf import settings
from rest_framework import serializers
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from remediation.actions.base import Action, ActionRefused, registry

USER_AGENT = "GRACE-probe/1"


class ProbeParams(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    timeout_seconds = serializers.FloatField(min_value=0.1, max_value=60, default=5.0)
    method = serializers.ChoiceField(choices=["GET", "HEAD"], default="GET")

    def validate_url(self, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("must be an http:// or https:// URL")
        if any(char == "\\" or char.isspace() or not char.isprintable() for char in value):
            raise serializers.ValidationError("must not contain backslashes, spaces or control characters")
        # The host exactly as the request will be sent, not as another parser reads the string.
        try:
            parsed = parse_url(requests.Request("GET", value).prepare().url)
        except (requests.RequestException, LocationParseError, ValueError) as exc:
            raise serializers.ValidationError(f"not a valid URL: {exc}") from None
        if parsed.auth:
            raise serializers.ValidationError("must not carry credentials")
        host = parsed.host or ""
        if not host_allowed(host):
            raise serializers.ValidationError(
                f"host {host!r} is not in GRACE_PROBE_ALLOWED_HOSTS ({', '.join(settings.GRACE_PROBE_ALLOWED_HOSTS)})"
            )
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if _loopback_name(host) and port not in settings.GRACE_PROBE_LOOPBACK_PORTS:
            raise serializers.ValidationError(_port_refusal(host, port))
        return value


def _port_refusal(host: str, port: int) -> str:
    allowed = ", ".join(str(p) for p in settings.GRACE_PROBE_LOOPBACK_PORTS)
    return f"port {port} on loopback ({host}) is not in GRACE_PROBE_LOOPBACK_PORTS ({allowed})"


def _loopback_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified  # 0.0.0.0 and :: connect to this host too


def _loopback_name(host: str) -> bool:
    """Whether ``host`` (as written, before any DNS) names this machine."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        return _loopback_address(ipaddress.ip_address(host))
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")


def _check_resolved(url: str) -> None:
    """Refuse, before connecting, a URL whose host resolves to loopback on a port not allowed there."""
    parsed = parse_url(url)
    host = (parsed.host or "").strip("[]")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if port in settings.GRACE_PROBE_LOOPBACK_PORTS:
        return
    if _loopback_name(host):
        raise ActionRefused(_port_refusal(host, port))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return  # unresolvable: the request fails the same way, without reaching anything
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if _loopback_address(address):
            raise ActionRefused(_port_refusal(f"{host} = {address}", port))


def host_allowed(host: str) -> bool:
    """Whether ``host`` (a URL's host, before any DNS) is allowed: an IP address only by an address or
    network entry, a name only by the same name or a ``*.domain`` entry it lies under."""
    host = host.lower().strip("[]").rstrip(".")
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in settings.GRACE_PROBE_ALLOWED_HOSTS:
        if entry == "*":
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue  # a name entry
        elif entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def probe(params: dict) -> dict:
    """Status and latency; a refused or timed-out connection is a fact (status None), not an error.

    Raises ``ActionRefused`` (nothing contacted) for a loopback port outside ``GRACE_PROBE_LOOPBACK_PORTS``.
    """
    _check_resolved(params["url"])
    started = time.perf_counter()
    try:
        response = requests.request(
            params.get("method", "GET"),
            params["url"],
            timeout=params.get("timeout_seconds", 5.0),
            allow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            stream=True,  # the status line is enough; the body is not downloaded
        )
        response.close()
    except requests.RequestException as exc:
        latency = (time.perf_counter() - started) * 1000
        return {"url": params["url"], "status": None, "ok": False, "latency_ms": round(latency, 2), "error": str(exc)}
    latency = (time.perf_counter() - started) * 1000
    return {
        "url": params["url"],
        "status": response.status_code,
        "ok": 200 <= response.status_code < 400,
        "latency_ms": round(latency, 2),
        "error": "",
    }


registry.register(
    Action(
        name="http.probe",
        family="local",
        params=ProbeParams,
        observe=probe,
        execute=probe,
        tier=1,
        idempotent=True,
        timeout=60,
        target_param="url",
        resource_kind="http",
        binds={"url": "target"},
        description="Probe an HTTP(S) endpoint: status and latency in ms (observe only).",
        default_contract=[{"field": "status", "op": "==", "value": 200, "within": 30}],
    )
)
