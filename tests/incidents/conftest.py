import copy

import pytest
from celery.signals import after_task_publish
from django.contrib.auth.models import Permission

from incidents import defaults, diagnosis
from incidents.models import SweepTarget

WEBHOOK_TOKEN = "test-webhook-token-0123456789"

# One real delivery from Alertmanager 0.25 (see docs/intake.md).
ALERTMANAGER_BODY = {
    "receiver": "webhook",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "DatabaseLocked", "service": "orders-db", "severity": "critical"},
            "annotations": {"summary": "orders-db locked"},
            "startsAt": "2026-11-25T10:14:11.436741Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://example/probe",
            "fingerprint": "3d799487cd717be8",
        }
    ],
    "groupLabels": {"alertname": "DatabaseLocked", "service": "orders-db"},
    "commonLabels": {"alertname": "DatabaseLocked", "service": "orders-db", "severity": "critical"},
    "commonAnnotations": {"summary": "orders-db locked"},
    "externalURL": "http://vm:9093",
    "version": "4",
    "groupKey": '{}:{alertname="DatabaseLocked", service="orders-db"}',
    "truncatedAlerts": 0,
}


def alertmanager_body(*alerts: dict, status: str = "firing") -> dict:
    body = copy.deepcopy(ALERTMANAGER_BODY)
    body["status"] = status
    if alerts:
        body["alerts"] = [copy.deepcopy(alert) for alert in alerts]
    return body


def alert(alertname: str = "DatabaseLocked", status: str = "firing", **labels: str) -> dict:
    item = copy.deepcopy(ALERTMANAGER_BODY["alerts"][0])
    item["status"] = status
    item["labels"] = {"alertname": alertname, "service": "orders-db", "severity": "critical", **labels}
    if status == "resolved":
        item["endsAt"] = "2026-11-25T10:20:00Z"
    return item


@pytest.fixture(autouse=True)
def _fresh_rules(settings):
    """Every diagnosis re-reads the rule table (tests change rules inside one transaction)."""
    settings.GRACE_DIAGNOSIS_RECHECK_SECONDS = 0
    settings.GRACE_WEBHOOK_TOKEN = WEBHOOK_TOKEN
    diagnosis.invalidate()
    yield
    diagnosis.invalidate()


@pytest.fixture
def default_rules(db):
    """The shipped diagnosis rules (without the shipped sweep targets, which each test chooses itself)."""
    defaults.install()
    SweepTarget.objects.all().delete()


@pytest.fixture
def published():
    """Task names and args published to the broker (observed through Celery's own signal)."""
    sent: list[tuple[str, list]] = []

    def record(sender=None, body=None, headers=None, **kwargs):
        sent.append((sender, list((body or [[]])[0]) if isinstance(body, list | tuple) else body))

    after_task_publish.connect(record, weak=False)
    yield sent
    after_task_publish.disconnect(record)


@pytest.fixture
def intake_user(django_user_model):
    user = django_user_model.objects.create_user("intake", password="pw-intake-123456")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["add_incident", "view_incident"]))
    return user


@pytest.fixture
def intake_client(api_client, intake_user):
    api_client.force_authenticate(intake_user)
    return api_client
