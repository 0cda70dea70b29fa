"""Signed checkpoints: the chain's head, signed with Ed25519 and written outside the database.

A checkpoint is a short text, signed as it is:

    grace-audit-checkpoint/v1
    origin grace
    size 1234
    head 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    time 2026-11-25T10:56:00.123456Z

``size`` is the number of sealed entries (the head's seq) and ``head`` the hash of
the link at that seq. Because every link hashes the one before it, a checkpoint
vouches for the whole chain up to ``size``: deleting its tail, rewriting an entry,
or re-hashing the chain from any point shows as a mismatch, which the chain alone
cannot show (whoever can rewrite the database can recompute every hash).

The private key comes from ``GRACE_AUDIT_SIGNING_KEY`` (PEM or base64 of the 32-byte
seed) or the PEM file ``GRACE_AUDIT_SIGNING_KEY_FILE``; with neither, one is generated
once into ``$GRACE_VAR_DIR/audit_signing_key.pem`` (mode 600). It is never stored in
the database. ``manage.py audit_public_key`` prints the public half.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from approvals import sealing, sinks
from approvals.models import GENESIS_HASH, AuditCheckpoint, AuditSeal
from grace_site.env import parse_ed25519_private_key, read_ed25519_key_file

logger = logging.getLogger("approvals.checkpoints")

FORMAT = "grace-audit-checkpoint/v1"
# Key of the PostgreSQL advisory lock that makes issuing checkpoints single-flight ("GRACECHK").
LEASE_KEY = 0x475241434543484B - (1 << 63)
_BODY = re.compile(
    r"grace-audit-checkpoint/v1\n"
    r"origin (?P<origin>[^\s]{1,100})\n"
    r"size (?P<size>0|[1-9][0-9]{0,18})\n"
    r"head (?P<head>[0-9a-f]{64})\n"
    r"time (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)\n"
)


# --- keys ------------------------------------------------------------------------------------------


def default_key_path() -> Path:
    return Path(settings.VAR_DIR) / "audit_signing_key.pem"


def signing_key() -> Ed25519PrivateKey:
    """The private key, from the environment or a file; ImproperlyConfigured naming the variable when unusable."""
    inline, path = settings.GRACE_AUDIT_SIGNING_KEY, settings.GRACE_AUDIT_SIGNING_KEY_FILE
    return _load_signing_key(inline, path, "" if inline or path else str(default_key_path()))


@functools.lru_cache(maxsize=4)
def _load_signing_key(inline: str, path: str, generated: str) -> Ed25519PrivateKey:
    if inline:
        return parse_ed25519_private_key(inline.encode(), "GRACE_AUDIT_SIGNING_KEY")
    if path:
        return read_ed25519_key_file("GRACE_AUDIT_SIGNING_KEY_FILE", path)
    return parse_ed25519_private_key(_generated_key(Path(generated)), f"the generated key {generated}")


def _generated_key(path: Path) -> bytes:
    """The default key of a single machine: generated once, mode 600, beside the other local secrets. Written
    whole to a temporary file, then linked into place, so a process starting at the same moment reads either
    nothing (and links its own, which loses) or the whole key."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    try:
        os.link(draft, path)
    except FileExistsError:
        pass  # another process was first: use its key
    finally:
        draft.unlink()
    return path.read_bytes()


def public_key() -> Ed25519PublicKey:
    return signing_key().public_key()


def load_public_key(path: str) -> Ed25519PublicKey:
    """A PEM public key from a file (what ``audit_public_key`` printed); ValueError with a sentence."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --- the signed text --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    head: str
    time: datetime
    where: str = ""  # the sink and place it was read from


def body(origin: str, size: int, head: str, at: datetime) -> str:
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{FORMAT}\norigin {origin}\nsize {size}\nhead {head}\ntime {stamp}\n"


def sign(text: str, key: Ed25519PrivateKey) -> dict:
    """The record written to every sink."""
    signature = base64.b64encode(key.sign(text.encode())).decode()
    return {"body": text, "signature": signature, "key_id": key_id(key.public_key())}


def open_record(record: dict, key: Ed25519PublicKey, *, where: str = "") -> Checkpoint:
    """The checkpoint a sink record holds, once its signature checks out; ValueError saying why not."""
    text, signature = record.get("body"), record.get("signature")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise ValueError("not a checkpoint record (body and signature expected)")
    try:
        key.verify(base64.b64decode(signature, validate=True), text.encode())
    except (InvalidSignature, binascii.Error):
        signer = record.get("key_id")
        if isinstance(signer, str) and signer != key_id(key):
            raise ValueError(f"signed by key {signer[:16]}, not by the trusted key {key_id(key)}") from None
        raise ValueError("the signature does not match the text (forged or altered)") from None
    match = _BODY.fullmatch(text)
    if match is None:
        raise ValueError(f"signed, but not a {FORMAT} text")
    at = datetime.strptime(match["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return Checkpoint(match["origin"], int(match["size"]), match["head"], at, where)


def read_sink(sink, key: Ed25519PublicKey) -> tuple[list[Checkpoint], list[str]]:
    """Every checkpoint of a sink whose signature holds, and a sentence for each record that does not."""
    good, problems = [], []
    for where, record in sink.read():
        if isinstance(record, str):
            problems.append(f"{where}: {record}")
            continue
        try:
            checkpoint = open_record(record, key, where=where)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if checkpoint.origin != settings.GRACE_AUDIT_ORIGIN:
            problems.append(f"{where}: a checkpoint of log {checkpoint.origin!r}, not {settings.GRACE_AUDIT_ORIGIN!r}")
            continue
        good.append(checkpoint)
    return good, problems


# --- issuing ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _lease(wait: bool) -> Iterator[bool]:
    """Single-flight for issuing: a PostgreSQL session advisory lock, or on SQLite (one machine) a file lock.
    Neither holds a transaction open while the sinks are written."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {'pg_advisory_lock' if wait else 'pg_try_advisory_lock'}(%s)", [LEASE_KEY])
            held = wait or bool(cursor.fetchone()[0])
        try:
            yield held
        finally:
            if held:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LEASE_KEY])
        return
    path = Path(settings.VAR_DIR) / "audit-checkpoint.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        yield held
    finally:
        os.close(fd)


def latest() -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.order_by("-issued_at", "-id").first()


def is_due(now: datetime | None = None) -> bool:
    """Every GRACE_AUDIT_CHECKPOINT_SECONDS while the chain grows; every GRACE_AUDIT_CHECKPOINT_IDLE_SECONDS
    when it does not (so a quiet log still proves it is being watched)."""
    now = now or timezone.now()
    last = latest()
    if last is None:
        return True
    age = (now - last.issued_at).total_seconds()
    if age >= settings.GRACE_AUDIT_CHECKPOINT_IDLE_SECONDS:
        return True
    return age >= settings.GRACE_AUDIT_CHECKPOINT_SECONDS and sealing.head().seq != last.size


def issue(*, requested_by: str = "", only_if_due: bool = False, wait: bool = True) -> AuditCheckpoint | None:
    """Sign the chain's head and write it to every configured sink, then keep a copy in the database.

    Returns None when another process is issuing one (``wait=False``) or none is due (``only_if_due``).
    A sink that fails is logged and noted on the copy (the others still get it); a key that cannot be
    loaded raises ImproperlyConfigured.
    """
    key = signing_key()
    targets = sinks.configured()
    with _lease(wait) as held:
        if not held or (only_if_due and not is_due()):
            return None
        head = sealing.head()
        now = timezone.now()
        record = sign(body(settings.GRACE_AUDIT_ORIGIN, head.seq, head.hash, now), key)
        results = {}
        for sink in targets:
            try:
                sink.write(record, size=head.seq, issued_at=now)
            except (OSError, sinks.SinkError) as exc:
                logger.warning("checkpoint %s not written to %s: %s", head.seq, sink.url, exc)
                results[sink.url] = f"failed: {exc}"
            else:
                results[sink.url] = "ok"
        with transaction.atomic():
            return AuditCheckpoint.objects.create(
                size=head.seq,
                head=head.hash,
                issued_at=now,
                origin=settings.GRACE_AUDIT_ORIGIN,
                key_id=record["key_id"],
                body=record["body"],
                signature=record["signature"],
                sinks=results,
                requested_by=requested_by[:150],
            )


# --- status: the admin page and the health check ---------------------------------------------------


@dataclass(frozen=True)
class Status:
    checkpoint: AuditCheckpoint | None
    age_seconds: float | None
    signature_ok: bool | None  # None: no key to check it with
    matches_chain: bool | None  # None: no checkpoint
    problems: tuple[str, ...]  # why it did not verify, in words
    failed_sinks: tuple[str, ...]
    pending: int
    oldest_pending_seconds: float | None
    head_seq: int

    @property
    def verified(self) -> bool:
        return bool(self.checkpoint) and self.signature_ok is True and self.matches_chain is True


def status() -> Status:
    """The latest checkpoint, its age, and whether it verifies: signed by our key, and the chain in the
    database still has that head at that seq (a full recomputation is ``verify_audit``)."""
    last = latest()
    pending, oldest = sealing.pending()
    head_seq = sealing.head().seq
    if last is None:
        return Status(None, None, None, None, ("no checkpoint has been issued yet",), (), pending, oldest, head_seq)
    problems = []
    try:
        key = public_key()
    except ImproperlyConfigured as exc:
        signature_ok, key = None, None
        problems.append(f"cannot check the signature: {exc}")
    if key is not None:
        try:
            open_record({"body": last.body, "signature": last.signature, "key_id": last.key_id}, key)
            signature_ok = True
        except ValueError as exc:
            signature_ok = False
            problems.append(f"signature: {exc}")
    expected = body(last.origin, last.size, last.head, last.issued_at)
    if last.body != expected:
        signature_ok = False
        problems.append("the stored text does not say what the row says")
    if last.size == 0:
        stored = GENESIS_HASH
    else:
        stored = AuditSeal.objects.filter(seq=last.size).values_list("hash", flat=True).first()
    matches = stored == last.head
    if not matches:
        problems.append(
            f"the chain has no link at seq {last.size} any more"
            if stored is None
            else f"the chain's link at seq {last.size} is {stored[:12]}, the checkpoint says {last.head[:12]}"
        )
    failed = tuple(f"{url}: {result}" for url, result in sorted(last.sinks.items()) if result != "ok")
    age = max(0.0, (timezone.now() - last.issued_at).total_seconds())
    return Status(last, age, signature_ok, matches, tuple(problems), failed, pending, oldest, head_seq)


def health() -> dict:
    """For ``/api/health/``: warnings (never failures) about sealing and checkpoints. Anyone may read
    health, so it names no sink and no reason: the admin's checkpoint page has the details."""
    state = status()
    warnings = []
    if state.oldest_pending_seconds is not None and state.oldest_pending_seconds > settings.GRACE_AUDIT_SEAL_MAX_LAG:
        warnings.append(
            f"{state.pending} audit entries unsealed, the oldest for {state.oldest_pending_seconds:.0f} s: "
            "is the approvals.seal_audit beat entry running?"
        )
    last = state.checkpoint
    if last is None:
        warnings.append("no audit checkpoint has been issued")
    else:
        stale_after = settings.GRACE_AUDIT_CHECKPOINT_MAX_AGE
        behind = last.size != state.head_seq
        if (behind and state.age_seconds > stale_after) or (
            state.age_seconds > settings.GRACE_AUDIT_CHECKPOINT_IDLE_SECONDS + stale_after
        ):
            warnings.append(f"the latest audit checkpoint is stale: issued {state.age_seconds:.0f} s ago")
        if not state.verified:
            warnings.append("the latest audit checkpoint does not verify (see the admin's checkpoint page)")
        if state.failed_sinks:
            warnings.append(
                f"the latest audit checkpoint was not written to {len(state.failed_sinks)} of "
                f"{len(last.sinks)} sinks (see the admin's checkpoint page)"
            )
    result = {
        "ok": True,
        "unsealed": state.pending,
        "checkpoint_age_seconds": round(state.age_seconds, 1) if last else None,
        "checkpoint_covers_head": last.size == state.head_seq if last else None,
    }
    if warnings:
        result["warning"] = "; ".join(warnings)
    return result
