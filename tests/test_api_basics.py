"""API authentication, permissions, schema and docs."""

import io
import re

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command

from approvals import audit


@pytest.mark.django_db
def test_the_api_refuses_anonymous_requests(api_client):
    response = api_client.get("/api/audit/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")


@pytest.mark.django_db
def test_a_token_from_grace_token_authenticates_and_revoking_it_locks_it_out(api_client, django_user_model):
    from approvals.models import ApiToken

    user = django_user_model.objects.create_user("ops", password="pw-ops-123456")
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    out = io.StringIO()
    call_command("grace_token", "create", "ops", stdout=out)
    key = out.getvalue().strip()
    audit.record("test.visible", actor="tester")

    response = api_client.get("/api/audit/", HTTP_AUTHORIZATION=f"Token {key}")
    call_command("grace_token", "revoke", str(ApiToken.objects.get(user=user).pk), stdout=io.StringIO())
    revoked = api_client.get("/api/audit/", HTTP_AUTHORIZATION=f"Token {key}")

    assert response.status_code == 200
    assert revoked.status_code == 401
    assert re.fullmatch(r"gra_[A-Za-z0-9_-]{43}", key)
    assert {e["action"] for e in response.json()["results"]} == {"test.visible", "token.issued"}
    assert response.json()["results"][0]["action"] == "test.visible"


@pytest.mark.django_db
def test_reading_the_audit_log_needs_the_view_permission(api_client, django_user_model):
    user = django_user_model.objects.create_user("nobody", password="pw-nobody-123456")
    api_client.force_authenticate(user)

    assert api_client.get("/api/audit/").status_code == 403


@pytest.mark.django_db
def test_the_audit_api_is_read_only_and_filterable(api_client, admin_user):
    audit.record("run.transition", actor="system", obj=("remediation.healrun", 7))
    audit.record("incident.created", actor="system", obj=("incidents.incident", 3))
    api_client.force_authenticate(admin_user)

    filtered = api_client.get("/api/audit/", {"action": "incident.created"}).json()
    assert [row["object_id"] for row in filtered["results"]] == ["3"]
    assert api_client.delete("/api/audit/1/").status_code == 405
    assert api_client.post("/api/audit/", {}, format="json").status_code == 405


@pytest.mark.django_db
def test_the_openapi_schema_is_valid(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    assert "/api/health/" in target.read_text()


@pytest.mark.django_db
def test_swagger_ui_is_served_without_a_cdn(client):
    response = client.get("/api/docs/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "swagger-ui" in html
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', html)
    assert external == []


@pytest.mark.django_db
def test_grace_setup_creates_one_admin_and_is_idempotent(django_user_model, monkeypatch):
    monkeypatch.delenv("GRACE_ADMIN_PASSWORD", raising=False)
    first, second = io.StringIO(), io.StringIO()

    call_command("grace_setup", stdout=first)
    call_command("grace_setup", stdout=second)

    assert django_user_model.objects.filter(is_superuser=True).count() == 1
    password = re.search(r"admin user created: admin / (\S+)", first.getvalue()).group(1)
    assert django_user_model.objects.get(username="admin").check_password(password)
    assert "already present" in second.getvalue()
    assert password not in second.getvalue()
