"""Admin: incidents with filters and search, audited rule editing, "test this rule" on selected incidents."""

import pytest

from approvals.models import AuditEvent
from incidents import services
from incidents.models import DiagnosisRule, Incident
from incidents.services import Signal

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def two_incidents(default_rules):
    locked = services.ingest(
        Signal(
            source="alertmanager", title="orders-db locked", service="orders-db", labels={"alertname": "DatabaseLocked"}
        )
    ).incident
    cpu = services.ingest(
        Signal(source="alertmanager", title="cpu hot", service="web", labels={"alertname": "HighCPU"})
    ).incident
    return locked, cpu


def test_the_incident_list_filters_and_searches(admin_client, two_incidents):
    locked, cpu = two_incidents

    found = admin_client.get("/admin/incidents/incident/", {"q": "orders-db", "diagnosis_code": "database_locked"})

    assert found.status_code == 200
    assert "orders-db locked" in found.content.decode() and "cpu hot" not in found.content.decode()
    detail = admin_client.get(f"/admin/incidents/incident/{locked.pk}/change/")
    assert detail.status_code == 200 and "db-locked-alert" in detail.content.decode()


def test_test_this_rule_against_the_selected_incidents(admin_client, two_incidents):
    locked, cpu = two_incidents
    rule = DiagnosisRule.objects.get(name="db-locked-alert")
    selection = {"action": "test_rule", "_selected_action": [locked.pk, cpu.pk]}

    form = admin_client.post("/admin/incidents/incident/", selection)
    assert form.status_code == 200 and "Test against 2 incident(s)" in form.content.decode()
    result = admin_client.post("/admin/incidents/incident/", {**selection, "rule": rule.pk, "apply": "1"})

    assert result.status_code == 200
    rows = {row["incident"].pk: row for row in result.context["results"]}
    assert rows[locked.pk]["matches"] and rows[locked.pk]["evidence"]["label_regex"] == {"alertname": "DatabaseLocked"}
    assert not rows[cpu.pk]["matches"] and rows[cpu.pk]["current_code"] == "high_cpu"
    assert "<td>yes</td>" in result.content.decode()


def test_a_rule_with_a_bad_regex_is_refused_in_the_admin_naming_the_field(admin_client):
    response = admin_client.post(
        "/admin/incidents/diagnosisrule/add/",
        {
            "name": "bad",
            "position": 1,
            "enabled": "on",
            "code": "high_cpu",
            "confidence": 0.5,
            "label_equals": "{}",
            "label_regex": "{}",
            "thresholds": "[]",
            "title_regex": "(unclosed",
        },
    )

    assert response.status_code == 200
    assert "title_regex" in response.context["adminform"].form.errors
    assert not DiagnosisRule.objects.exists()


def test_rule_edits_in_the_admin_are_audited(admin_client):
    response = admin_client.post(
        "/admin/incidents/diagnosisrule/add/",
        {
            "name": "cpu",
            "position": 1,
            "enabled": "on",
            "code": "high_cpu",
            "confidence": 0.5,
            "label_equals": '{"alertname": "Cpu"}',
            "label_regex": "{}",
            "thresholds": "[]",
        },
    )

    assert response.status_code == 302
    rule = DiagnosisRule.objects.get()
    event = AuditEvent.objects.get(action="config.created", object_type="incidents.diagnosisrule")
    assert (event.actor, event.object_id) == ("root", str(rule.pk))


def test_resolving_from_the_admin_goes_through_the_audited_service(admin_client, two_incidents):
    locked, _ = two_incidents

    admin_client.post("/admin/incidents/incident/", {"action": "resolve_selected", "_selected_action": [locked.pk]})

    locked.refresh_from_db()
    assert locked.status == "resolved"
    assert AuditEvent.objects.get(action="incident.resolved").actor == "root"
    assert Incident.objects.get(pk=two_incidents[1].pk).status == "open"
