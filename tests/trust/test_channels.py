"""Intake identity: every incident comes through a channel that stamps its source, scopes its services and owns
its fingerprints; tokens are stored as digests and shown once."""

from __future__ import annotations

import pytest

from approvals.models import AuditEvent
from incidents import channels
from incidents.choices import ChannelKind, IncidentStatus, Source
from incidents.models import Channel, Incident
from tests.incidents.conftest import WEBHOOK_TOKEN, alert, alertmanager_body
from tests.support import inventory

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_a_body_claiming_source_sweep_is_stored_with_the_channels_source(api_client, default_rules):
    _, token = inventory.channel("ci-client")

    response = api_client.post(
        "/api/incidents/?wait=true",
        {"title": "WAL bloat", "service": "orders", "source": "sweep", "labels": {"check": "sqlite_wal"}},
        format="json",
        **bearer(token),
    )

    assert response.status_code == 201, response.json()
    incident = Incident.objects.get()
    assert (incident.source, incident.channel.name) == (Source.API, "ci-client")
    assert incident.raw_payload["source"] == "sweep"  # kept as what was claimed
    # The sweep-only diagnosis rules never see it as a sweep.
    assert incident.diagnosis_evidence.get("rule_name") != "sweep-sqlite-wal"


def test_a_user_posting_with_their_own_credentials_raises_through_the_users_channel(api_client, admin_user):
    api_client.force_authenticate(admin_user)

    response = api_client.post("/api/incidents/?wait=true", {"title": "odd", "source": "benchmark"}, format="json")

    assert response.status_code == 201, response.json()
    incident = Incident.objects.get()
    assert (incident.channel.name, incident.source, incident.raised_by) == ("api-users", "api", admin_user)


def test_a_pre_registered_fingerprint_of_another_channel_does_not_absorb_a_real_alert(api_client, default_rules):
    from incidents.alertmanager import fingerprint

    real = alert("DatabaseLocked")
    squatted = fingerprint(real["labels"])
    _, token = inventory.channel("intruder")
    squat = api_client.post(
        "/api/incidents/?wait=true", {"title": "placeholder", "fingerprint": squatted}, format="json", **bearer(token)
    )
    assert squat.status_code == 201

    response = api_client.post(
        "/api/webhooks/alertmanager/?wait=true", alertmanager_body(real), format="json", **bearer(WEBHOOK_TOKEN)
    )

    assert response.status_code == 200, response.json()
    assert response.json()["created"] == 1
    genuine = Incident.objects.get(channel__name="alertmanager")
    assert genuine.fingerprint == squatted and genuine.status == IncidentStatus.OPEN
    assert Incident.objects.get(channel__name="intruder").occurrences == 1


def test_a_resolution_from_one_channel_cannot_resolve_anothers_incident(api_client, default_rules):
    body = alertmanager_body(alert("DatabaseLocked"))
    api_client.post("/api/webhooks/alertmanager/?wait=true", body, format="json", **bearer(WEBHOOK_TOKEN))
    other, token = inventory.channel("other-am", kind=ChannelKind.ALERTMANAGER, source="alertmanager")

    resolved = alertmanager_body(alert("DatabaseLocked", status="resolved"), status="resolved")
    response = api_client.post("/api/webhooks/alertmanager/?wait=true", resolved, format="json", **bearer(token))

    assert response.json()["resolved"] == 0
    assert Incident.objects.get(channel__name="alertmanager").status in IncidentStatus.ACTIVE


def test_an_alert_for_a_service_outside_the_channels_scope_is_kept_and_never_acted_on(api_client, default_rules):
    inventory.service("orders-db")
    inventory.service("payments")
    _, token = inventory.channel(
        "payments-am", kind=ChannelKind.ALERTMANAGER, source="alertmanager", services=["payments"]
    )

    response = api_client.post(
        "/api/webhooks/alertmanager/?wait=true",
        alertmanager_body(alert("DatabaseLocked")),
        format="json",
        **bearer(token),
    )

    assert response.status_code == 200
    incident = Incident.objects.get()
    assert incident.service == "orders-db"
    assert incident.status == IncidentStatus.ESCALATED
    assert "may not raise incidents for service 'orders-db'" in incident.status_reason
    assert not incident.heal_runs.exists()


def test_the_environment_is_the_inventorys_and_the_claim_is_only_evidence(api_client, default_rules):
    inventory.service("orders-db", environment="production")
    claimed = alert("DatabaseLocked", environment="staging")

    api_client.post(
        "/api/webhooks/alertmanager/?wait=true", alertmanager_body(claimed), format="json", **bearer(WEBHOOK_TOKEN)
    )

    incident = Incident.objects.get()
    assert (incident.environment, incident.claimed_environment) == ("production", "staging")


def test_channel_tokens_are_stored_as_digests_shown_once_and_scoped_to_their_kind(api_client, admin_user):
    api_client.force_authenticate(admin_user)

    body = {"name": "prom-eu", "kind": "alertmanager", "source": "alertmanager", "all_services": True}
    created = api_client.post("/api/channels/", body, format="json")

    assert created.status_code == 201, created.json()
    token = created.json()["token"]
    assert token.startswith("grc_")
    channel = Channel.objects.get(name="prom-eu")
    assert channel.owner == admin_user
    assert channel.token_hash == channels.digest(token)
    assert token not in str(Channel.objects.values().get(pk=channel.pk))
    assert api_client.get(f"/api/channels/{channel.pk}/").json()["token"] is None
    assert not AuditEvent.objects.filter(data__icontains=token).exists()
    api_client.force_authenticate(None)
    ok = api_client.post("/api/webhooks/alertmanager/?wait=true", alertmanager_body(), format="json", **bearer(token))
    wrong_kind = api_client.post("/api/incidents/?wait=true", {"title": "x"}, format="json", **bearer(token))
    assert ok.status_code == 200
    assert wrong_kind.status_code == 401


def test_a_new_token_replaces_the_old_one(api_client, admin_user):
    channel, old = inventory.channel("rotating", kind=ChannelKind.ALERTMANAGER, source="alertmanager")
    api_client.force_authenticate(admin_user)
    new = api_client.post(f"/api/channels/{channel.pk}/token/").json()["token"]
    api_client.force_authenticate(None)

    refused = api_client.post(
        "/api/webhooks/alertmanager/?wait=true", alertmanager_body(), format="json", **bearer(old)
    )
    accepted = api_client.post(
        "/api/webhooks/alertmanager/?wait=true", alertmanager_body(), format="json", **bearer(new)
    )

    assert (refused.status_code, accepted.status_code) == (401, 200)


def test_an_api_channel_may_only_raise_incidents(api_client):
    _, token = inventory.channel("raise-only")

    assert api_client.get("/api/incidents/", **bearer(token)).status_code == 403
    assert api_client.get("/api/runs/", **bearer(token)).status_code in (401, 403)


def test_operators_cannot_create_channels_stamping_grace_only_sources(api_client, admin_user):
    api_client.force_authenticate(admin_user)

    sweep = api_client.post("/api/channels/", {"name": "fake-sweeper", "kind": "api", "source": "sweep"}, format="json")
    internal = api_client.post(
        "/api/channels/", {"name": "fake-internal", "kind": "internal", "source": "api"}, format="json"
    )

    assert sweep.status_code == 400 and "source" in sweep.json()
    assert internal.status_code == 400 and "kind" in internal.json()
    assert not Channel.objects.filter(name__startswith="fake").exists()


def test_a_disabled_channel_is_refused(api_client):
    channel, token = inventory.channel("off", kind=ChannelKind.ALERTMANAGER, source="alertmanager")
    channel.enabled = False
    channels.save(channel)

    response = api_client.post(
        "/api/webhooks/alertmanager/?wait=true", alertmanager_body(), format="json", **bearer(token)
    )

    assert response.status_code == 401


def test_a_built_in_channel_or_one_that_raised_incidents_is_kept_with_a_409_and_another_is_deleted(
    api_client, admin_user
):
    builtin = channels.builtin(channels.SWEEPS)
    used, token = inventory.channel("used-client")
    pending, pending_token = inventory.channel("pending-client")
    unused, _ = inventory.channel("spare-client")
    api_client.post("/api/incidents/?wait=true", {"title": "t", "service": "orders"}, format="json", **bearer(token))
    assert Incident.objects.filter(channel=used).exists()
    # stored and acknowledged, not applied yet: its delivery names the channel
    assert (
        api_client.post(
            "/api/incidents/", {"title": "p", "service": "orders"}, format="json", **bearer(pending_token)
        ).status_code
        == 202
    )
    api_client.force_authenticate(admin_user)

    answers = {c.name: api_client.delete(f"/api/channels/{c.pk}/") for c in (builtin, used, pending, unused)}

    assert answers[builtin.name].status_code == 409
    assert "built in: disable it instead" in answers[builtin.name].json()["detail"]
    assert answers["used-client"].status_code == 409
    assert "raised incidents" in answers["used-client"].json()["detail"]
    assert answers["pending-client"].status_code == 409
    assert answers["spare-client"].status_code == 204
    kept = Channel.objects.filter(pk__in=[builtin.pk, used.pk, pending.pk, unused.pk]).values_list("name", flat=True)
    assert set(kept) == {builtin.name, "used-client", "pending-client"}
    assert list(AuditEvent.objects.filter(action="channel.deleted").values_list("object_id", flat=True)) == [
        str(unused.pk)
    ]
