"""Hostile input gets a 4xx naming what is wrong, never a 5xx, and nothing is written (docs/hostile-input.md).

Bodies are sent as raw JSON text, so escapes such as a lone ``\\ud800`` or ``\\u0000`` arrive exactly as an
attacker would send them.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from approvals.models import AuditEvent
from incidents.models import Incident
from remediation.models import HealRun, Playbook

pytestmark = pytest.mark.django_db

WEBHOOK_TOKEN = "hostile-webhook-token-0123"


def alert(labels: str = '{"alertname": "WalBloat"}', annotations: str = "{}", extra: str = "") -> str:
    return (
        '{"version": "4", "status": "firing", "receiver": "grace", ' + extra + '"alerts": [{"status": "firing", '
        '"labels": ' + labels + ', "annotations": ' + annotations + ', "startsAt": "2024-05-01T10:00:00Z"}]}'
    )


# (name, path, raw body, the field the 400 names, words its message must hold)
# fmt: off
REFUSED = [
    ("surrogate in a label name", "/api/incidents/", '{"title": "t", "labels": {"env\\ud800": "x"}}',
     "labels", 'labels["env\\ud800"]: the key contains a lone UTF-16 surrogate'),
    ("surrogate in a label value", "/api/incidents/", '{"title": "t", "labels": {"env": "x\\udc00"}}',
     "labels", "labels.env: contains a lone UTF-16 surrogate (\\udc00)"),
    ("surrogate in an unknown field", "/api/incidents/", '{"title": "t", "extra": "\\ud800"}',
     "extra", "extra: contains a lone UTF-16 surrogate"),
    ("surrogate in an unknown field's name", "/api/incidents/", '{"title": "t", "x\\ud800": 1}',
     "x\\ud800", "the key contains a lone UTF-16 surrogate"),
    ("NUL in a label name", "/api/incidents/", '{"title": "t", "labels": {"env\\u0000": "x"}}',
     "labels", "the key contains a NUL character"),
    ("NUL in an unknown field", "/api/incidents/", '{"title": "t", "extra": {"deep": ["\\u0000"]}}',
     "extra", "extra.deep[0]: contains a NUL character"),
    ("nesting 1,000 levels deep", "/api/incidents/", '{"title": "t", "extra": ' + "[" * 1000 + "]" * 1000 + "}",
     "extra", "more than 32 levels deep"),
    ("nesting 40 levels deep", "/api/incidents/", '{"title": "t", "extra": ' + "[" * 40 + "]" * 40 + "}",
     "extra", "more than 32 levels deep"),
    ("an overlong key", "/api/incidents/", json.dumps({"title": "t", "extra": {"k" * 5000: 1}}),
     "extra", "the key is 5000 characters long; at most 256"),
    ("a number beyond a double", "/api/incidents/", '{"title": "t", "extra": 1e400}',
     "extra", "a number too large to be represented"),
    ("webhook: surrogate in a label name", "/api/webhooks/alertmanager/", alert('{"alertname": "a", "j\\ud800": "x"}'),
     "alerts", 'alerts[0].labels["j\\ud800"]: the key contains a lone UTF-16 surrogate'),
    ("webhook: surrogate in an annotation", "/api/webhooks/alertmanager/",
     alert(annotations='{"summary": "\\ud83d"}'), "alerts", "alerts[0].annotations.summary: contains a lone"),
    ("webhook: NUL in a label name", "/api/webhooks/alertmanager/", alert('{"alertname": "a", "j\\u0000": "x"}'),
     "alerts", "the key contains a NUL character"),
    ("webhook: NUL in an unknown field", "/api/webhooks/alertmanager/", alert(extra='"extra": "\\u0000", '),
     "extra", "extra: contains a NUL character"),
    ("webhook: nesting 1,000 levels deep", "/api/webhooks/alertmanager/",
     alert(extra='"extra": ' + "{\"a\":" * 1000 + "1" + "}" * 1000 + ", "), "extra", "more than 32 levels deep"),
    ("playbook: tier 0", "/api/playbooks/", '{"name": "p0", "diagnosis_codes": ["x"], "steps": [], "tier": 0}',
     "tier", "greater than or equal to 1"),
    ("playbook: tier 4", "/api/playbooks/", '{"name": "p4", "diagnosis_codes": ["x"], "steps": [], "tier": 4}',
     "tier", "less than or equal to 3"),
    ("playbook: tier beyond int64", "/api/playbooks/",
     '{"name": "pb", "diagnosis_codes": ["x"], "steps": [], "tier": 99999999999999999999}', "tier", "less than"),
    ("playbook: NUL in a diagnosis code", "/api/playbooks/",
     '{"name": "pn", "diagnosis_codes": ["x\\u0000"], "steps": [], "tier": 1}', "diagnosis_codes", "NUL"),
]
# fmt: on


@pytest.fixture
def client_for(api_client, admin_user, settings):
    settings.GRACE_WEBHOOK_TOKEN = WEBHOOK_TOKEN
    api_client.force_authenticate(admin_user)

    def post(path: str, body: str, **extra):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {WEBHOOK_TOKEN}"} if path.startswith("/api/webhooks/") else {}
        if headers:
            api_client.force_authenticate(None)
        return api_client.post(path, body, content_type="application/json", **headers, **extra)

    return post


def _written() -> tuple[int, int, int]:
    return Incident.objects.count(), Playbook.objects.count(), AuditEvent.objects.count()


@pytest.mark.parametrize(("name", "path", "body", "field", "words"), REFUSED, ids=[case[0] for case in REFUSED])
def test_it_refuses_what_it_cannot_store_with_a_400_naming_the_field(client_for, name, path, body, field, words):
    before = _written()

    response = client_for(path, body)

    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors, errors
    assert any(words in message for message in errors[field]), errors
    assert _written() == before


def test_a_body_over_the_limit_is_413_on_every_endpoint(client_for, settings):
    settings.GRACE_API_MAX_BODY_BYTES = 4096
    body = json.dumps({"name": "big", "description": "x" * 5000, "diagnosis_codes": ["x"], "steps": []})

    response = client_for("/api/playbooks/", body)

    assert response.status_code == 413
    assert "over 4096 bytes" in response.json()["detail"]


@pytest.mark.parametrize(("length", "status"), [("\u00b2", 400), ("1" + "0" * 30, 413), ("9" * 5000, 413)])
def test_an_odd_content_length_gets_a_clear_answer_not_a_500(client_for, length, status):
    response = client_for("/api/incidents/", json.dumps({"title": "x"}), CONTENT_LENGTH=length)

    assert response.status_code == status, response.content[:200]
    assert _written()[0] == 0


@pytest.mark.parametrize("path", ["/api/incidents/", "/api/playbooks/", "/api/webhooks/alertmanager/"])
def test_a_body_over_djangos_own_cap_is_still_the_apis_413(client_for, settings, path):
    """Over DATA_UPLOAD_MAX_MEMORY_SIZE Django refuses to read a body at all; the API still answers its 413."""
    body = json.dumps({"title": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)})

    response = client_for(path, body)

    assert response.status_code == 413, response.content[:200]
    assert response.json()["detail"] == f"Request body is over {settings.GRACE_API_MAX_BODY_BYTES} bytes."


@pytest.mark.parametrize("path", ["/api/incidents/", "/api/playbooks/"])
def test_a_body_that_is_not_json_is_415_on_every_endpoint(api_client, admin_user, path):
    api_client.force_authenticate(admin_user)
    form = "title=hello&name=form&diagnosis_codes=x&steps=&tier=1"

    response = api_client.post(path, form, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert _written()[:2] == (0, 0)


@pytest.mark.parametrize(
    "body",
    ['{"title": 5}', '{"title": "t", "labels": ["a"]}', '{"title": "t", "labels": {"a": {"b": 1}}}', "[]", '"t"'],
)
def test_wrong_types_are_400_with_field_errors(client_for, body):
    response = client_for("/api/incidents/", body)

    assert response.status_code == 400
    assert isinstance(response.json(), dict)


def test_unknown_fields_are_kept_as_evidence_not_refused(client_for):
    response = client_for("/api/incidents/?wait=true", '{"title": "t", "extra": {"note": "fine"}}')

    assert response.status_code == 201
    assert Incident.objects.get().raw_payload["extra"] == {"note": "fine"}


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("/api/learning/stats/?service=%00", 400),
        ("/api/learning/stats/?diagnosis=a%00b", 400),
        ("/api/incidents/?service=%00", 400),
        ("/api/runs/?since=2024-01-01T00:00:00-17:32", 200),  # PostgreSQL takes offsets up to 15:59 only
        ("/api/audit/?since=0001-01-01T00:00:00%2B05:00", 400),  # before year 1 once in UTC
    ],
)
def test_query_strings_the_database_cannot_take_as_they_are_are_refused_or_normalized(
    api_client, admin_user, query, status
):
    api_client.force_authenticate(admin_user)

    response = api_client.get(query)

    assert response.status_code == status, response.content
    assert isinstance(response.json(), dict)


def test_a_page_size_beyond_what_the_database_takes_is_capped(api_client, admin_user):
    Playbook.objects.create(name="one", diagnosis_codes=["x"], steps=[], tier=1)
    api_client.force_authenticate(admin_user)

    response = api_client.get("/api/playbooks/", {"limit": "2988919101954082209792"})

    assert response.status_code == 200, response.content
    assert response.json()["count"] == 1


def test_an_unknown_api_url_is_a_json_404(api_client, admin_user):
    api_client.force_authenticate(admin_user)

    response = api_client.post("/api/incidents/not-a-number/heal/", {}, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_deleting_a_playbook_runs_refer_to_is_409(api_client, admin_user):
    playbook = Playbook.objects.create(name="used", diagnosis_codes=["x"], steps=[], tier=1)
    now = timezone.now()
    incident = Incident.objects.create(fingerprint="f", title="t", first_seen=now, last_seen=now)
    HealRun.objects.create(incident=incident, playbook=playbook, status="SUCCEEDED", finished_at=now)
    api_client.force_authenticate(admin_user)

    response = api_client.delete(f"/api/playbooks/{playbook.pk}/")

    assert response.status_code == 409
    assert "has 1 run(s)" in response.json()["detail"]
    assert Playbook.objects.filter(pk=playbook.pk).exists()
    assert not AuditEvent.objects.filter(action="playbook.deleted").exists()


@pytest.mark.parametrize("tier", [0, 4, -1])
def test_a_playbook_update_with_a_tier_outside_1_to_3_is_400(api_client, admin_user, tier):
    playbook = Playbook.objects.create(name="pb", diagnosis_codes=["x"], steps=[], tier=1)
    api_client.force_authenticate(admin_user)

    patched = api_client.patch(f"/api/playbooks/{playbook.pk}/", {"tier": tier})
    body = {"name": "pb", "diagnosis_codes": ["x"], "steps": [], "tier": tier}
    put = api_client.put(f"/api/playbooks/{playbook.pk}/", body)

    assert (patched.status_code, put.status_code) == (400, 400)
    assert "tier" in patched.json() and "tier" in put.json()
    assert Playbook.objects.get(pk=playbook.pk).tier == 1


def test_wrong_credentials_are_401_and_a_missing_permission_403(api_client, django_user_model):
    intake_only = django_user_model.objects.create_user("intake", password="pw-intake-123456")
    intake_only.user_permissions.add(Permission.objects.get(codename="add_incident"))

    anonymous = api_client.post("/api/playbooks/", {"name": "p"})
    api_client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    wrong_token = api_client.get("/api/runs/")
    api_client.credentials()
    api_client.force_authenticate(intake_only)
    forbidden = api_client.post("/api/playbooks/", {"name": "p"})

    assert (anonymous.status_code, wrong_token.status_code, forbidden.status_code) == (401, 401, 403)
