"""Open breakers are visible in the API and the admin, and an operator can reset one (audited)."""

import pytest

from approvals.models import AuditEvent
from remediation import resilience
from remediation.actions import load_all
from remediation.actions.base import ActionError

pytestmark = pytest.mark.django_db


def _open_breaker(action_name: str, target_url: str) -> None:
    action = load_all().get(action_name)

    def failing() -> dict:
        raise ActionError("upstream refused the connection")

    for _ in range(10):
        try:
            resilience.run_guarded(action, {"url": target_url}, failing)
        except (ActionError, resilience.Blocked):
            pass


def test_an_open_breaker_is_listed_and_can_be_reset_through_the_api(api_client, admin_user, redis_client):
    redis_client.flushdb()
    _open_breaker("http.probe", "http://127.0.0.1:9/status")
    api_client.force_authenticate(admin_user)

    listed = api_client.get("/api/resilience/").json()
    breaker = next(b for b in listed["breakers"] if b["action"] == "http.probe")
    assert breaker["state"] == "open"
    reset = api_client.post(
        "/api/resilience/reset/", {"action": "http.probe", "target": breaker["target"]}, format="json"
    )

    assert reset.status_code == 200 and reset.json()["reset"] is True
    assert not [b for b in api_client.get("/api/resilience/").json()["breakers"] if b["state"] == "open"]
    assert AuditEvent.objects.filter(action="resilience.breaker_reset", actor="root").exists()


def test_resetting_an_unknown_action_is_a_field_error(api_client, admin_user):
    api_client.force_authenticate(admin_user)

    response = api_client.post("/api/resilience/reset/", {"action": "rm.rf", "target": "x"}, format="json")

    assert response.status_code == 400
    assert "action" in response.json()


def test_the_admin_page_shows_open_breakers(client, admin_user, redis_client):
    redis_client.flushdb()
    _open_breaker("http.probe", "http://127.0.0.1:9/health")
    client.force_login(admin_user)

    page = client.get("/admin/remediation/healrun/resilience/")

    assert page.status_code == 200
    assert b"http.probe" in page.content and b"Reset (audited)" in page.content


def test_the_resilience_api_says_503_when_redis_is_down(api_client, admin_user, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    api_client.force_authenticate(admin_user)

    response = api_client.get("/api/resilience/")

    assert response.status_code == 503
    assert "unavailable" in response.json()["detail"]
