"""`GET /api/cloud/status/` and the family probes behind it."""

from __future__ import annotations

import socket
import time

import pytest

from remediation import cloud_status
from remediation.actions.base import ActionUnavailable, registry


@pytest.fixture
def nothing_configured(settings, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    settings.GRACE_AWS_REGION = settings.GRACE_AWS_ENDPOINT_URL = settings.GRACE_AWS_PROFILE = ""
    settings.GRACE_DOCKER_HOST = ""
    settings.GRACE_KUBECONFIG = ""
    settings.GRACE_KUBE_IN_CLUSTER = False


@pytest.fixture
def black_hole():
    """A TCP port that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield server.getsockname()[1]


def _get(api_client, admin_user, **query):
    api_client.force_authenticate(admin_user)
    started = time.monotonic()
    response = api_client.get("/api/cloud/status/", query)
    return response, time.monotonic() - started


@pytest.mark.django_db
def test_with_nothing_configured_every_family_is_unavailable_with_a_reason(nothing_configured, api_client, admin_user):
    response, elapsed = _get(api_client, admin_user)

    assert response.status_code == 200
    assert elapsed < 2.0
    body = response.json()
    assert body["unavailable"] == ["aws", "docker", "kubernetes"]
    families = body["families"]
    assert families["aws"]["reason"].startswith("aws: no region configured")
    assert families["docker"]["reason"].startswith("docker: no engine configured")
    assert families["kubernetes"]["reason"].startswith("kubernetes: no kubeconfig at")
    assert all(f["status"] == "unavailable" and f["configured"] is False for f in families.values())


@pytest.mark.django_db
def test_the_status_answers_within_two_seconds_when_every_family_hangs(
    settings, monkeypatch, black_hole, k8s, tmp_path, api_client, admin_user
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.GRACE_AWS_REGION = "us-east-1"
    settings.GRACE_AWS_ENDPOINT_URL = f"http://127.0.0.1:{black_hole}"
    settings.GRACE_DOCKER_HOST = f"tcp://127.0.0.1:{black_hole}"
    k8s.url = f"http://127.0.0.1:{black_hole}"
    settings.GRACE_KUBECONFIG = str(k8s.write_kubeconfig(tmp_path / "hanging"))

    response, elapsed = _get(api_client, admin_user)

    assert response.status_code == 200
    assert elapsed < 2.0
    families = response.json()["families"]
    for name, family in families.items():
        assert family["status"] == "unavailable", family
        assert family["configured"] is True
        assert family["reason"].startswith(f"{name}: "), family


@pytest.mark.django_db
def test_reachable_families_report_who_and_what_they_are(moto, docker_engine, k8s, api_client, admin_user):
    response, _ = _get(api_client, admin_user)

    body = response.json()
    assert body["available"] == ["aws", "docker", "kubernetes"], body
    families = body["families"]
    assert families["aws"]["identity"]["account"] == "123456789012"  # moto's account
    assert families["docker"]["identity"]["engine_version"]
    assert families["kubernetes"]["identity"]["server_version"] == "v1.31.0-grace-standin"


@pytest.mark.django_db
def test_the_last_error_of_a_family_is_shown_even_after_it_recovers(
    docker_engine, settings, tmp_path, api_client, admin_user
):
    working = settings.GRACE_DOCKER_HOST
    settings.GRACE_DOCKER_HOST = f"unix://{tmp_path}/gone.sock"
    action = registry.get("docker.container.restart")
    with pytest.raises(ActionUnavailable):
        action.execute(action.validate({"container": "api-1"}))
    settings.GRACE_DOCKER_HOST = working

    response, _ = _get(api_client, admin_user, family="docker")

    docker = response.json()["families"]["docker"]
    assert docker["status"] == "available"
    assert "cannot reach the engine" in docker["last_error"]["error"]


@pytest.mark.django_db
def test_an_unknown_family_is_a_field_error(api_client, admin_user):
    response, _ = _get(api_client, admin_user, family="azure")

    assert response.status_code == 400
    assert "family" in response.json()


@pytest.mark.django_db
def test_the_status_needs_an_authenticated_user(api_client):
    assert api_client.get("/api/cloud/status/").status_code == 401


def test_family_status_refuses_an_unknown_family():
    with pytest.raises(ValueError, match="unknown cloud family"):
        cloud_status.family_status("azure")
