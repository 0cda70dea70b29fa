"""Intake channels: who is speaking, with which token, for which services, stamping which source.

Every incident comes through a channel. An operator creates one per integration (an Alertmanager receiver,
an API client); its token is shown once and stored only as a SHA-256 digest. GRACE's own code paths (health
sweeps, benchmark regressions, in-process exception capture, users posting through the API with their own
credentials) use built-in channels that have no token. ``GRACE_WEBHOOK_TOKEN`` keeps working as the token of
the built-in ``alertmanager`` channel.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from approvals import audit
from incidents.choices import CHANNEL_SOURCES, ChannelKind, Source
from incidents.models import Channel

TOKEN_PREFIX = "grc_"  # noqa: S105 - the prefix that marks a channel token, not a secret
# Built-in channels: (name, kind, source). Created by migration; repaired by ``ensure_builtin``.
DEFAULT_ALERTMANAGER = "alertmanager"
USERS = "api-users"
SWEEPS = "grace-sweeps"
BENCHMARKS = "grace-benchmarks"
EXCEPTIONS = "grace-exceptions"
BUILTIN = (
    (DEFAULT_ALERTMANAGER, ChannelKind.ALERTMANAGER, Source.ALERTMANAGER),
    (USERS, ChannelKind.INTERNAL, Source.API),
    (SWEEPS, ChannelKind.INTERNAL, Source.SWEEP),
    (BENCHMARKS, ChannelKind.INTERNAL, Source.BENCHMARK),
    (EXCEPTIONS, ChannelKind.INTERNAL, Source.EXCEPTION),
)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).hexdigest()


def ensure_builtin() -> int:
    """Create the built-in channels that are missing. Returns how many were created."""
    created = 0
    for name, kind, source in BUILTIN:
        channel, made = Channel.objects.get_or_create(
            name=name, defaults={"kind": kind, "source": source, "all_services": True, "builtin": True}
        )
        if made:
            created += 1
            audit.record("channel.created", actor="system:defaults", obj=channel, data={"kind": kind, "source": source})
    return created


def builtin(name: str) -> Channel:
    """A built-in channel by name (created when missing, so a flushed database still takes intake)."""
    channel = Channel.objects.filter(name=name, builtin=True).first()
    if channel is None:
        ensure_builtin()
        channel = Channel.objects.get(name=name, builtin=True)
    return channel


def authenticate(token: str, kind: str) -> Channel | None:
    """The enabled channel of ``kind`` this token belongs to, or None."""
    token = (token or "").strip()
    if not token:
        return None
    if kind == ChannelKind.ALERTMANAGER and settings.GRACE_WEBHOOK_TOKEN:
        if hmac.compare_digest(token.encode(), settings.GRACE_WEBHOOK_TOKEN.encode()):
            channel = builtin(DEFAULT_ALERTMANAGER)
            return channel if channel.enabled else None
    if not token.startswith(TOKEN_PREFIX):
        return None
    return Channel.objects.filter(token_hash=digest(token), kind=kind, enabled=True).first()


def webhooks_configured() -> bool:
    """Whether any token can authenticate on the Alertmanager webhook."""
    return (
        bool(settings.GRACE_WEBHOOK_TOKEN)
        or Channel.objects.filter(kind=ChannelKind.ALERTMANAGER, enabled=True, token_hash__isnull=False).exists()
    )


def may_raise(channel: Channel, service: str) -> bool:
    """Whether the channel may raise incidents for the named service."""
    if channel.all_services:
        return True
    return bool(service) and channel.services.filter(name=service).exists()


def validate(channel: Channel) -> None:
    if channel.kind == ChannelKind.INTERNAL and not channel.builtin:
        raise ValidationError({"kind": "internal channels are GRACE's own; choose alertmanager or api"})
    if not channel.builtin and channel.source not in CHANNEL_SOURCES:
        raise ValidationError(
            {"source": f"a channel may stamp {', '.join(CHANNEL_SOURCES)}; sweep and benchmark come from GRACE itself"}
        )
    if channel.kind == ChannelKind.ALERTMANAGER and channel.source != Source.ALERTMANAGER:
        raise ValidationError({"source": "an Alertmanager channel stamps the alertmanager source"})


def channel_data(channel: Channel) -> dict:
    data = {
        "name": channel.name,
        "kind": channel.kind,
        "source": channel.source,
        "owner": channel.owner.get_username() if channel.owner_id else None,
        "all_services": channel.all_services,
        "enabled": channel.enabled,
        "token": f"{channel.token_hint}…" if channel.token_hint else None,
    }
    if channel.pk:
        data["services"] = sorted(channel.services.values_list("name", flat=True))
    return data


def save(channel: Channel, *, services=None, actor=None) -> Channel:
    """Create or update a channel (validated, audited with before and after; never the token itself)."""
    before = None
    if channel.pk:
        old = Channel.objects.filter(pk=channel.pk).first()
        before = channel_data(old) if old else None
        if old is not None and old.builtin:
            channel.builtin, channel.kind, channel.source, channel.name = True, old.kind, old.source, old.name
    validate(channel)
    channel.full_clean(exclude=["services"])
    with transaction.atomic():
        channel.save()
        if services is not None:
            channel.services.set(services)
        after = channel_data(channel)
        changes = audit.diff(before, after)
        audit.record("channel.saved" if before else "channel.created", actor=actor, obj=channel, data=changes)
    return channel


def issue_token(channel: Channel, *, actor=None) -> str:
    """A new token for the channel (the old one stops working). Returned once; only its digest is kept."""
    if channel.kind == ChannelKind.INTERNAL:
        raise ValidationError({"kind": "internal channels take no token"})
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        Channel.objects.filter(pk=channel.pk).update(token_hash=digest(token), token_hint=token[:10])
        channel.token_hash, channel.token_hint = digest(token), token[:10]
        audit.record("channel.token_issued", actor=actor, obj=channel, data={"token": f"{token[:10]}…"})
    return token


class ChannelKept(Exception):
    """A channel that must stay (built in, or the origin of stored incidents): disable it instead."""


def delete(channel: Channel, *, actor=None) -> None:
    if channel.builtin:
        raise ChannelKept(f"channel {channel.name} is built in: disable it instead")
    if channel.incidents.exists() or channel.deliveries.exists():
        raise ChannelKept(
            f"channel {channel.name} raised incidents or sent deliveries: disable it instead, so their origin stays"
        )
    with transaction.atomic():
        audit.record("channel.deleted", actor=actor, obj=channel, data={"before": channel_data(channel)})
        channel.delete()


# The built-in channel GRACE's own code paths use for each source when they name no channel.
FOR_SOURCE = {
    Source.ALERTMANAGER: DEFAULT_ALERTMANAGER,
    Source.API: USERS,
    Source.SWEEP: SWEEPS,
    Source.BENCHMARK: BENCHMARKS,
    Source.EXCEPTION: EXCEPTIONS,
}
