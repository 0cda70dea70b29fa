"""The indexes behind a user's deliveries and incidents, and an incident's channel (migration 0009).

Deliveries and incidents posted with a channel's token have no user, so the user foreign keys have partial
indexes; an incident's channel is served by the dedupe index that leads with it. Deleting a user or a channel
must still find their rows through an index, on both databases.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from incidents.models import Delivery, Incident
from tests.support import inventory

pytestmark = pytest.mark.django_db


def _plan(sql: str, params: list) -> str:
    """The database's plan for ``sql``, with sequential scans ruled out where it can be told so (PostgreSQL
    would rather scan a table this small)."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(" ".join(str(column) for column in row) for row in cursor.fetchall())


def _rows(django_user_model):
    channel, _ = inventory.channel("index-client")
    user = django_user_model.objects.create_user("poster", password="x")
    now = timezone.now()
    delivery = Delivery.objects.create(
        kind="incident", channel=channel, raised_by=user, body="{}", received_at=now, available_at=now
    )
    incident = Incident.objects.create(
        fingerprint="f" * 64,
        channel=channel,
        raised_by=user,
        source="api",
        title="raised by a user",
        first_seen=now,
        last_seen=now,
    )
    return channel, user, delivery, incident


def test_a_users_deliveries_and_incidents_are_found_by_their_partial_indexes(django_user_model):
    _, user, _, _ = _rows(django_user_model)

    deliveries = _plan("SELECT id FROM incidents_delivery WHERE raised_by_id = %s", [user.pk])
    incidents = _plan("SELECT id FROM incidents_incident WHERE raised_by_id = %s", [user.pk])

    assert "delivery_raised_by_idx" in deliveries, deliveries
    assert "incident_raised_by_idx" in incidents, incidents


def test_an_incidents_channel_is_found_by_the_dedupe_index(django_user_model):
    channel, _, _, _ = _rows(django_user_model)

    plan = _plan("SELECT id FROM incidents_incident WHERE channel_id = %s", [channel.pk])

    assert "incident_channel_fp_status_idx" in plan or "incident_one_active_per_channel_fingerprint" in plan, plan


def test_deleting_a_user_keeps_what_they_raised_without_them(django_user_model):
    _, user, delivery, incident = _rows(django_user_model)

    user.delete()

    delivery.refresh_from_db()
    incident.refresh_from_db()
    assert delivery.raised_by_id is None and incident.raised_by_id is None


def test_a_channel_with_incidents_cannot_be_deleted(django_user_model):
    channel, _, delivery, incident = _rows(django_user_model)
    delivery.delete()  # only the incident holds the channel now

    with pytest.raises(ProtectedError) as refused:
        channel.delete()

    assert set(refused.value.protected_objects) == {incident}
