"""Docker executors against a real engine (a private dockerd started by the test services)."""

from __future__ import annotations

import os

import pytest
from rest_framework.exceptions import ValidationError

import remediation.actions.docker  # noqa: F401 - registers the docker actions
from remediation import contracts
from remediation.actions.base import ActionError, ActionUnavailable, registry
from remediation.cloud_status import NotConfigured
from tests.support.runs import wait_for as poll_until

SECOND = 1_000_000_000  # the engine counts health check intervals in nanoseconds


def _poll(predicate, what: str, timeout: float = 20.0):
    return poll_until(predicate, timeout=timeout, what=what)


def _run(client, name: str, **kwargs):
    labels = {client.test_label: "1", **kwargs.pop("labels", {})}
    return client.containers.run(
        client.test_image,
        kwargs.pop("command", ["sleep", "1000"]),
        name=name,
        detach=True,
        init=True,  # sleep as PID 1 would ignore SIGTERM and make every stop wait its full timeout
        network_mode="none",
        labels=labels,
        **kwargs,
    )


def _health(container) -> str:
    container.reload()
    return container.attrs["State"].get("Health", {}).get("Status", "")


def _verify(action, params, state):
    results = contracts.verify(action.default_contract, lambda: action.observe(params), params, state)
    return {r.field: (r.passed, r.actual) for r in results}


def test_an_unhealthy_container_is_restarted_and_comes_back_healthy(docker_engine, tmp_path):
    # Healthy while /tmp/healthy exists; the command creates it at every start.
    container = _run(
        docker_engine,
        "api-1",
        command=["sh", "-c", "touch /tmp/healthy; exec sleep 1000"],
        healthcheck={"test": ["CMD", "test", "-e", "/tmp/healthy"], "interval": SECOND // 5, "retries": 1},
    )
    _poll(lambda: _health(container) == "healthy", "the container becoming healthy")
    container.exec_run(["rm", "/tmp/healthy"])
    _poll(lambda: _health(container) == "unhealthy", "the container becoming unhealthy")
    action = registry.get("docker.container.restart")
    params = action.validate({"container": "api-1", "stop_timeout": 2})

    state = action.snapshot(params, tmp_path)
    result = action.execute(params)
    verdict = _verify(action, params, state)

    assert state["health"] == "unhealthy"
    assert result["started_at"] != state["started_at"]
    assert verdict["started_at"][0] is True
    assert verdict["status"] == (True, "running")
    assert verdict["health"] == (True, "healthy")


def test_a_container_without_a_health_check_passes_on_running(docker_engine, tmp_path):
    _run(docker_engine, "worker-1")
    action = registry.get("docker.container.restart")
    params = action.validate({"container": "worker-1"})

    state = action.snapshot(params, tmp_path)
    action.execute(params)

    assert state["health"] == "none"
    assert all(passed for passed, _ in _verify(action, params, state).values())


def test_restarting_a_missing_container_is_an_error_naming_it(docker_engine):
    action = registry.get("docker.container.restart")

    with pytest.raises(ActionError, match="ghost"):
        action.execute(action.validate({"container": "ghost"}))


def _service(client, project: str, service: str, number: int):
    return _run(
        client,
        f"{project}-{service}-{number}",
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": service,
            "com.docker.compose.container-number": str(number),
            "com.docker.compose.oneoff": "False",
        },
        environment={"ROLE": "web"},
    )


def test_a_compose_service_scales_from_one_to_three_and_back(docker_engine, tmp_path):
    original = _service(docker_engine, "shop", "web", 1)
    _run(docker_engine, "bystander", labels={"com.docker.compose.project": "shop"})
    action = registry.get("docker.service.scale")
    params = action.validate({"project": "shop", "service": "web", "replicas": 3, "stop_timeout": 1})

    state = action.snapshot(params, tmp_path)
    result = action.execute(params)

    assert state == {"replicas": 1}
    assert result["created"] == ["shop-web-2", "shop-web-3"]
    assert _verify(action, params, state) == {"running_replicas": (True, 3)}
    clone = docker_engine.containers.get("shop-web-3")
    assert clone.labels["com.docker.compose.container-number"] == "3"
    assert "ROLE=web" in clone.attrs["Config"]["Env"]
    assert clone.attrs["HostConfig"]["NetworkMode"] == "none"

    undone = action.rollback(params, state, tmp_path)

    assert sorted(undone["stopped"]) == ["shop-web-2", "shop-web-3"]
    assert action.observe(params) == {"running_replicas": 1, "containers": 3, "stopped": 2}
    original.reload()
    assert original.status == "running"


def test_scaling_up_again_starts_the_stopped_containers_before_creating_more(docker_engine, tmp_path):
    _service(docker_engine, "shop", "web", 1)
    action = registry.get("docker.service.scale")
    up = action.validate({"project": "shop", "service": "web", "replicas": 2, "stop_timeout": 1})
    action.execute(up)
    action.execute(action.validate({"project": "shop", "service": "web", "replicas": 1, "stop_timeout": 1}))

    result = action.execute(up)

    assert result["started"] == ["shop-web-2"]
    assert result["created"] == []
    assert action.observe(up)["running_replicas"] == 2


def test_scaling_a_service_without_containers_is_an_error(docker_engine):
    action = registry.get("docker.service.scale")

    with pytest.raises(ActionError, match="has no container to scale from"):
        action.execute(action.validate({"project": "shop", "service": "nothing", "replicas": 2}))


def test_an_unknown_named_engine_is_a_field_error(docker_engine):
    with pytest.raises(ValidationError) as caught:
        registry.get("docker.service.scale").validate({"project": "shop", "service": "web", "replicas": 1, "host": "x"})

    assert "host" in caught.value.detail


def test_without_an_engine_the_family_is_not_configured(settings):
    settings.GRACE_DOCKER_HOST = ""
    action = registry.get("docker.container.restart")

    with pytest.raises(NotConfigured, match="docker: no engine configured"):
        action.observe(action.validate({"container": "api-1"}))


def test_an_engine_that_does_not_answer_makes_the_family_unavailable(settings, tmp_path):
    settings.GRACE_DOCKER_HOST = f"unix://{tmp_path}/no-such.sock"
    action = registry.get("docker.container.restart")

    with pytest.raises(ActionUnavailable, match="docker: cannot reach the engine"):
        action.observe(action.validate({"container": "api-1"}))


@pytest.fixture
def tls_engine(docker_engine, settings):
    """GRACE pointed at the test engine's TLS listener (client certificates required)."""
    host = os.environ.get("GRACE_TEST_DOCKER_TLS_HOST")
    if not host:
        pytest.fail(f"no TLS engine: {os.environ.get('GRACE_TEST_DOCKER_TLS_ERROR', 'see the cloud.start hook')}")
    settings.GRACE_DOCKER_HOST = host
    settings.GRACE_DOCKER_CERT_PATH = os.environ["GRACE_TEST_DOCKER_CERT_PATH"]
    settings.GRACE_DOCKER_TLS_VERIFY = True
    return docker_engine


def test_a_tls_engine_is_reached_with_the_client_certificate(tls_engine, tmp_path):
    _run(tls_engine, "tls-1")
    action = registry.get("docker.container.restart")
    params = action.validate({"container": "tls-1", "stop_timeout": 1})

    state = action.snapshot(params, tmp_path)
    action.execute(params)

    assert _verify(action, params, state)["started_at"][0] is True


def test_a_tls_engine_refuses_a_client_without_a_certificate(tls_engine, settings):
    settings.GRACE_DOCKER_CERT_PATH = ""
    action = registry.get("docker.container.restart")

    with pytest.raises(ActionUnavailable, match="docker: cannot reach the engine"):
        action.observe(action.validate({"container": "tls-1"}))


def test_missing_tls_files_mean_the_engine_is_not_configured(tls_engine, settings, tmp_path):
    settings.GRACE_DOCKER_CERT_PATH = str(tmp_path)
    action = registry.get("docker.container.restart")

    with pytest.raises(NotConfigured, match="GRACE_DOCKER_CERT_PATH"):
        action.observe(action.validate({"container": "tls-1"}))
