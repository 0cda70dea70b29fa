"""POST/GET /api/incidents/: token auth, model permissions, dedupe answers, filters, bad input."""

import io
import json

import pytest
from django.core.management import call_command

from incidents import services
from incidents.models import Incident
from incidents.services import Signal

pytestmark = pytest.mark.django_db
SYNC = (
    "/api/incidents/?wait=true"  # the synchronous mode: the answer is the incident (202 tests: test_durable_intake.py)
)

SIGNAL = {
    "source": "api",
    "service": "checkout",
    "title": "Checkout latency high",
    "message": "p99 over 2 s",
    "severity": "critical",
    "labels": {"alertname": "CheckoutLatencyHigh", "region": "eu-west-1"},
}


def test_posting_a_signal_with_a_token_creates_an_incident(api_client, intake_user, default_rules):
    out = io.StringIO()
    call_command("grace_token", "create", intake_user.username, stdout=out)
    key = out.getvalue().strip()

    response = api_client.post(SYNC, SIGNAL, format="json", HTTP_AUTHORIZATION=f"Token {key}")

    assert response.status_code == 201, response.content
    body = response.json()
    incident = Incident.objects.get()
    assert body["id"] == incident.pk
    assert body["fingerprint"] == incident.fingerprint
    assert body["status"] == "open"
    assert body["diagnosis"]["code"] == "latency_spike"
    assert body["diagnosis"]["evidence"]["rule_name"] == "latency-alert"
    assert body["heal_run_id"] is None
    assert incident.raw_payload == SIGNAL


def test_a_duplicate_answers_200_with_the_same_incident(intake_client, default_rules):
    first = intake_client.post(SYNC, SIGNAL, format="json").json()

    second = intake_client.post(SYNC, SIGNAL, format="json")

    assert second.status_code == 200
    assert second.json()["id"] == first["id"]
    assert second.json()["occurrences"] == 2


def test_the_api_needs_a_token_and_the_model_permission(api_client, django_user_model):
    assert api_client.post(SYNC, SIGNAL, format="json").status_code == 401
    api_client.force_authenticate(django_user_model.objects.create_user("viewer", password="pw-viewer-123456"))

    assert api_client.post(SYNC, SIGNAL, format="json").status_code == 403
    assert api_client.get("/api/incidents/").status_code == 403
    assert not Incident.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"service": "x"}, "title"),
        ({**SIGNAL, "severity": "apocalyptic"}, "severity"),
        ({**SIGNAL, "source": "carrier-pigeon"}, "source"),
        ({**SIGNAL, "title": {"nested": True}}, "title"),
        ({**SIGNAL, "title": 42}, "title"),
        ({**SIGNAL, "labels": ["a", "b"]}, "labels"),
        ({**SIGNAL, "labels": {"n": 1}}, "labels"),
        ({**SIGNAL, "labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
        ({**SIGNAL, "labels": {"big": "x" * 2000}}, "labels"),
        ({**SIGNAL, "fingerprint": "spaces are not allowed"}, "fingerprint"),
    ],
)
def test_bad_input_gets_400_with_field_errors_and_writes_nothing(intake_client, body, field):
    response = intake_client.post(SYNC, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Incident.objects.exists()


def test_a_body_that_is_not_json_gets_400(intake_client):
    response = intake_client.post(SYNC, data=b"{not json", content_type="application/json")

    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]
    bare = intake_client.post(SYNC, data=b"NaN", content_type="application/json")
    assert bare.status_code == 400
    assert not Incident.objects.exists()


def test_a_body_over_one_mebibyte_gets_413(intake_client):
    body = json.dumps({**SIGNAL, "message": "x" * (1024 * 1024)})

    response = intake_client.post(SYNC, data=body, content_type="application/json")

    assert response.status_code == 413
    assert not Incident.objects.exists()


def test_the_list_filters_by_status_service_diagnosis_and_since(intake_client, default_rules):
    services.ingest(Signal(source="api", title="slow", service="checkout", labels={"alertname": "CheckoutLatencyHigh"}))
    down = services.ingest(Signal(source="api", title="down", service="cart", labels={"alertname": "ServiceDown"}))
    services.ingest(Signal(source="api", title="odd", service="cart"))
    services.resolve(down.incident.pk, reason="back")

    def ids(**params):
        response = intake_client.get("/api/incidents/", params)
        assert response.status_code == 200, response.content
        return sorted(row["title"] for row in response.json()["results"])

    assert ids() == ["down", "odd", "slow"]
    assert ids(status="open") == ["slow"]
    assert ids(status=["resolved", "escalated"]) == ["down", "odd"]
    assert ids(service="cart") == ["down", "odd"]
    assert ids(diagnosis="service_down") == ["down"]
    assert ids(since="2999-01-01T00:00:00Z") == []
    assert intake_client.get("/api/incidents/", {"since": "yesterday"}).status_code == 400
    assert intake_client.get("/api/incidents/", {"status": "sleeping"}).status_code == 400


def test_the_detail_shows_diagnosis_evidence_and_raw_payload(intake_client, default_rules):
    created = intake_client.post(SYNC, SIGNAL, format="json").json()

    detail = intake_client.get(f"/api/incidents/{created['id']}/")

    assert detail.status_code == 200
    assert detail.json()["raw_payload"]["labels"]["region"] == "eu-west-1"
    assert detail.json()["diagnosis"]["confidence"] > 0
    assert intake_client.get("/api/incidents/999999/").status_code == 404


def test_the_heal_run_id_comes_from_the_incidents_latest_run(intake_client, default_rules):
    from remediation import pipeline

    created = intake_client.post(SYNC, SIGNAL, format="json").json()
    run = pipeline.start_run(created["id"])

    listed = intake_client.get("/api/incidents/").json()["results"][0]
    detail = intake_client.get(f"/api/incidents/{created['id']}/").json()
    again = intake_client.post(SYNC, SIGNAL, format="json").json()

    assert created["heal_run_id"] is None
    assert listed["heal_run_id"] == detail["heal_run_id"] == again["heal_run_id"] == run.pk
