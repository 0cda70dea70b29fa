"""POST /api/webhooks/alertmanager/?wait=true (synchronous mode) with Alertmanager's version 4 payload."""

import json

import pytest

from approvals.models import AuditEvent
from incidents.models import Incident
from tests.incidents.conftest import ALERTMANAGER_BODY, WEBHOOK_TOKEN, alert, alertmanager_body

pytestmark = pytest.mark.django_db
URL = "/api/webhooks/alertmanager/?wait=true"  # the synchronous mode (tests/incidents/test_durable_intake.py: 202)
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {WEBHOOK_TOKEN}"}


def deliver(client, body, **headers):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **{**AUTH, **headers})


def test_a_firing_alert_creates_a_diagnosed_incident(
    api_client, default_rules, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(api_client, ALERTMANAGER_BODY)

    assert response.status_code == 200, response.content
    incident = Incident.objects.get()
    assert response.json() == {"alerts": 1, "created": 1, "absorbed": 0, "resolved": 0, "incidents": [incident.pk]}
    assert (incident.source, incident.service, incident.severity) == ("alertmanager", "orders-db", "critical")
    assert incident.title == "orders-db locked"
    assert incident.diagnosis_code == "database_locked"
    assert incident.raw_payload["generatorURL"] == "http://example/probe"
    assert incident.first_seen.isoformat().startswith("2026-11-25T10:14:11")
    assert published == [("remediation.start_run", [incident.pk])]
    assert AuditEvent.objects.get(action="incident.created").actor == "channel:alertmanager"


def test_a_batch_of_new_incidents_is_handed_to_the_pipeline_in_one_message(
    api_client, default_rules, published, django_capture_on_commit_callbacks
):
    body = alertmanager_body(*(alert(service=f"orders-db-{i}", fingerprint=str(i)) for i in range(3)))
    for i, item in enumerate(body["alerts"]):
        item["fingerprint"] = f"f{i}"

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(api_client, body)

    assert response.json()["created"] == 3
    ids = sorted(Incident.objects.values_list("pk", flat=True))
    assert [(name, sorted(args[0])) for name, args in published] == [("remediation.start_runs", ids)]


def test_the_same_alert_from_both_alertmanagers_of_a_pair_gives_one_incident(api_client, default_rules):
    peer = alertmanager_body(alert())
    peer["externalURL"] = "http://vm2:9093"
    peer["alerts"][0]["fingerprint"] = "3d799487cd717be8"

    deliver(api_client, ALERTMANAGER_BODY)
    response = deliver(api_client, peer)

    assert response.json()["absorbed"] == 1
    incident = Incident.objects.get()
    assert incident.occurrences == 2


def test_a_resolved_alert_resolves_its_incident_and_cancels_the_heal(
    api_client, default_rules, published, django_capture_on_commit_callbacks
):
    deliver(api_client, ALERTMANAGER_BODY)
    incident = Incident.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(api_client, alertmanager_body(alert(status="resolved"), status="resolved"))

    assert response.json()["resolved"] == 1
    incident.refresh_from_db()
    assert incident.status == "resolved"
    assert "Alertmanager reported the alert resolved" in incident.status_reason
    assert published == [("remediation.cancel_for_incident", [incident.pk])]
    assert AuditEvent.objects.get(action="incident.resolved").data["reason"] == incident.status_reason


def test_long_annotations_are_accepted_and_kept(api_client, default_rules):
    item = alert("DiskFull")
    item["annotations"] = {"summary": "disk full", "description": "d" * 4000, "runbook_url": "http://runbooks/disk"}

    response = deliver(api_client, alertmanager_body(item))

    assert response.status_code == 200, response.content
    incident = Incident.objects.get()
    assert incident.message == "d" * 4000
    assert incident.raw_payload["annotations"]["runbook_url"] == "http://runbooks/disk"


def test_a_batch_mixes_new_repeated_and_resolved_alerts(api_client, default_rules):
    deliver(api_client, alertmanager_body(alert("HighCPU"), alert("HighMemory")))
    body = alertmanager_body(
        alert("HighCPU"), alert("DiskFull"), alert("DiskFull"), alert("HighMemory", status="resolved")
    )

    response = deliver(api_client, body)

    assert response.json()["alerts"] == 4
    assert response.json()["created"] == 1  # DiskFull
    assert response.json()["absorbed"] == 2  # HighCPU again, DiskFull's twin
    assert response.json()["resolved"] == 1
    assert Incident.objects.get(labels__alertname="DiskFull").occurrences == 2
    assert Incident.objects.get(labels__alertname="HighMemory").status == "resolved"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": "Bearer wrong-token-wrong-token"},
        {"HTTP_AUTHORIZATION": f"Token {WEBHOOK_TOKEN}"},
        {"HTTP_AUTHORIZATION": f"Bearer {WEBHOOK_TOKEN}x"},
    ],
)
def test_a_missing_or_wrong_token_gets_401(api_client, headers):
    response = api_client.post(URL, data=json.dumps(ALERTMANAGER_BODY), content_type="application/json", **headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Incident.objects.exists()


def test_webhooks_are_refused_with_503_when_no_token_is_configured(api_client, settings):
    settings.GRACE_WEBHOOK_TOKEN = ""

    response = deliver(api_client, ALERTMANAGER_BODY)

    assert response.status_code == 503
    assert "GRACE_WEBHOOK_TOKEN" in response.json()["detail"]


def _broken(index: int, **changes) -> dict:
    body = alertmanager_body(alert("A"), alert("B"), alert("C"))
    for key, value in changes.items():
        if value is None:
            del body["alerts"][index][key]
        else:
            body["alerts"][index][key] = value
    return body


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (_broken(1, status="burning"), ["alerts", "1", "status"]),
        (_broken(2, labels={"alertname": "C", "severity": "apocalyptic"}), ["alerts", "2", "labels"]),
        (_broken(1, labels=None), ["alerts", "1", "labels"]),
        (_broken(1, labels={}), ["alerts", "1", "labels"]),
        (_broken(0, labels={"alertname": ["list"]}), ["alerts", "0", "labels"]),
        (_broken(2, startsAt="yesterday"), ["alerts", "2", "startsAt"]),
        (_broken(1, annotations="text"), ["alerts", "1", "annotations"]),
        (_broken(0, labels={"alertname": "A", **{f"l{i}": "v" for i in range(70)}}), ["alerts", "0", "labels"]),
        ({**ALERTMANAGER_BODY, "version": "3"}, ["version"]),
        ({**ALERTMANAGER_BODY, "alerts": "many"}, ["alerts"]),
        ({key: value for key, value in ALERTMANAGER_BODY.items() if key != "alerts"}, ["alerts"]),
    ],
)
def test_an_invalid_batch_gets_400_naming_the_bad_alert_and_writes_nothing(api_client, default_rules, body, path):
    response = deliver(api_client, body)

    assert response.status_code == 400
    errors = response.json()
    for key in path:
        assert key in errors, errors
        errors = errors[key]
    assert not Incident.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="incident.").exists()


def test_non_json_and_oversized_deliveries_are_refused(api_client):
    assert api_client.post(URL, data=b"<xml/>", content_type="application/json", **AUTH).status_code == 400
    big = alertmanager_body(*[alert(f"A{i}", padding="x" * 900) for i in range(1200)])

    response = deliver(api_client, big)

    assert response.status_code == 413
    assert not Incident.objects.exists()
