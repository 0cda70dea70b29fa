"""Typed readers for settings that come from the environment.

Every helper raises ImproperlyConfigured naming the variable when its value
cannot be used, so a bad deployment fails at start-up with a sentence instead
of misbehaving later.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false/1/0/yes/no/on/off), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value}")
    return value


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_size(raw: str, name: str) -> int:
    """``"5GiB"``, ``"512 MB"``, ``"1000000"`` -> bytes (ImproperlyConfigured naming ``name`` otherwise)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", raw)
    unit = match and _SIZE_UNITS.get(match.group(2).lower())
    if not unit:
        raise ImproperlyConfigured(f"{name} must be a size such as 5GiB, 512MB or 1000000 (bytes), got {raw!r}")
    return int(float(match.group(1)) * unit)


def env_bytes(name: str, default: str, *, minimum: int = 0) -> int:
    """A size in bytes, with an optional unit (B, kB/KiB, MB/MiB, GB/GiB, TB/TiB)."""
    value = parse_size(os.environ.get(name, default), name)
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum} bytes, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    items = [item.strip() for item in raw.split(",")]
    if any(not item for item in items):
        raise ImproperlyConfigured(f"{name} must be a comma-separated list without empty items, got {raw!r}")
    return items


def env_ports(name: str, default: list[int]) -> list[int]:
    """A comma-separated list of TCP ports (1-65535)."""
    ports = []
    for item in env_list(name, [str(port) for port in default]):
        try:
            port = int(item)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must list port numbers, got {item!r}") from None
        if not 1 <= port <= 65535:
            raise ImproperlyConfigured(f"{name}: {port} is not a port (1-65535)")
        ports.append(port)
    return ports


def env_map(name: str, *, form: str) -> dict[str, str]:
    """``name=value,name=value`` as a dict; ``form`` (e.g. ``"name=url"``) names the shape in the error."""
    mapping = {}
    for item in env_list(name, []):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ImproperlyConfigured(f"{name} items must look like {form}, got {item!r}")
        mapping[key.strip()] = value.strip()
    return mapping


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    raw = os.environ.get(name, default)
    parsed = urlparse(raw)
    if parsed.scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ImproperlyConfigured(f"{name} must start with one of {allowed}, got {raw!r}")
    if parsed.scheme not in ("sqlite",) and not parsed.hostname and not parsed.path:
        raise ImproperlyConfigured(f"{name} has no host: {raw!r}")
    return raw


def env_database(name: str, default_sqlite_path: str) -> dict:
    """Build a Django DATABASES entry from a URL.

    ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or
    ``postgres://user:pass@host:port/dbname`` (``postgresql://`` too).
    SQLite runs in WAL mode with a busy timeout and IMMEDIATE transactions, so
    concurrent writers wait for the lock instead of failing half-way.
    """
    raw = os.environ.get(name)
    if raw is None:
        return _sqlite(default_sqlite_path)
    parsed = urlparse(raw)
    if parsed.scheme == "sqlite":
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if not path:
            raise ImproperlyConfigured(f"{name} names no SQLite file: {raw!r}")
        return _sqlite(path)
    if parsed.scheme in ("postgres", "postgresql"):
        dbname = parsed.path.lstrip("/")
        if not dbname:
            raise ImproperlyConfigured(f"{name} names no database: {raw!r}")
        try:
            port = parsed.port
        except ValueError:
            raise ImproperlyConfigured(f"{name} has a bad port: {raw!r}") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": dbname,
            "USER": parsed.username or "",
            "PASSWORD": parsed.password or "",
            "HOST": parsed.hostname or "",
            "PORT": str(port or ""),
            "CONN_MAX_AGE": env_int("GRACE_DB_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                "connect_timeout": 5,
                # GRACE's own sessions are recognisable, so postgres.terminate_blockers never ends them.
                "application_name": os.environ.get("GRACE_PG_APPLICATION_NAME", "grace"),
                # Bound every statement so a stuck query cannot hold a worker forever.
                "options": f"-c statement_timeout={env_int('GRACE_DB_STATEMENT_TIMEOUT_MS', 60000, minimum=0)}",
            },
        }
    raise ImproperlyConfigured(f"{name} must start with sqlite:// or postgres://, got {raw!r}")


def _sqlite(path: str) -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "CONN_MAX_AGE": env_int("GRACE_DB_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
        },
    }


def parse_ed25519_private_key(data: bytes, name: str):
    """An Ed25519 private key from PEM (PKCS8, unencrypted) or base64 of its 32-byte seed; ``name`` is what
    the error names (the variable, or the file)."""
    import base64
    import binascii

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = data.strip()
    if data.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(f"{name} is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ImproperlyConfigured(f"{name} must be an Ed25519 key, got {type(key).__name__}")
        return key
    try:
        seed = base64.b64decode(data, validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != 32:
        raise ImproperlyConfigured(f"{name} must be an Ed25519 private key: PEM, or base64 of the 32-byte seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def read_ed25519_key_file(name: str, path: str):
    """The key in the file ``path`` names (given by the variable ``name``); ImproperlyConfigured naming both."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}: cannot read {path}: {exc.strerror}") from None
    return parse_ed25519_private_key(data, f"{name} ({path})")
