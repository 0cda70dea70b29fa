"""Docker executors through the docker SDK: container restart, compose service scale.

The engine is ``GRACE_DOCKER_HOST`` (default: ``DOCKER_HOST``), or one of the
named engines in ``GRACE_DOCKER_HOSTS`` picked by a step's ``host`` parameter.
``tcp://`` engines speak TLS with the client certificate in
``GRACE_DOCKER_CERT_PATH`` when it is set. Every client has
``GRACE_DOCKER_TIMEOUT`` as its socket timeout. An engine
that is not configured or does not answer makes the family unavailable.

A compose service is the set of containers labelled
``com.docker.compose.project`` / ``com.docker.compose.service`` (one-off
``compose run`` containers excluded). Scaling up starts the service's stopped
containers first, then creates new ones from the configuration of its newest
container (as ``docker compose up --scale`` does); scaling down stops the
newest running ones and keeps them, so a rollback can start them again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import requests
from django.conf import settings
from docker.errors import APIError, DockerException, NotFound, TLSParameterError
from docker.tls import TLSConfig
from rest_framework import serializers

from remediation.actions.base import (
    Action,
    ActionError,
    ActionUnavailable,
    TransientActionError,
    registry,
)
from remediation.cloud_status import NotConfigured, note_error

FAMILY = "docker"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"


def _fail(cls: type[ActionError], message: str) -> ActionError:
    if cls is not ActionError:
        note_error(FAMILY, message)
    return cls(message)


@contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Translate docker SDK and transport errors into the action error classes."""
    try:
        yield
    except NotFound as exc:
        raise ActionError(f"docker: {what}: not found ({exc.explanation or exc})") from exc
    except APIError as exc:
        message = f"docker: {what}: {exc.explanation or exc}"
        if exc.status_code in (502, 503, 504):
            raise _fail(TransientActionError, message) from exc
        raise _fail(ActionError, message) from exc
    except requests.exceptions.ConnectTimeout as exc:
        raise _fail(ActionUnavailable, f"docker: {what}: cannot reach the engine ({exc})") from exc
    except requests.exceptions.Timeout as exc:
        raise _fail(TransientActionError, f"docker: {what}: timed out ({exc})") from exc
    except requests.exceptions.ConnectionError as exc:
        raise _fail(ActionUnavailable, f"docker: {what}: cannot reach the engine ({exc})") from exc
    except DockerException as exc:
        raise _fail(ActionError, f"docker: {what}: {exc}") from exc


def engine_url(host: str = "") -> str:
    if host:
        try:
            return settings.GRACE_DOCKER_HOSTS[host]
        except KeyError:
            raise NotConfigured(f"docker: no engine named {host!r} in GRACE_DOCKER_HOSTS") from None
    if not settings.GRACE_DOCKER_HOST:
        raise NotConfigured("docker: no engine configured (set GRACE_DOCKER_HOST or DOCKER_HOST)")
    return settings.GRACE_DOCKER_HOST


def _tls(url: str) -> TLSConfig | None:
    """Client-certificate TLS for tcp:// engines when GRACE_DOCKER_CERT_PATH is set."""
    if not url.startswith("tcp://") or not settings.GRACE_DOCKER_CERT_PATH:
        return None
    certs = Path(settings.GRACE_DOCKER_CERT_PATH)
    verify = settings.GRACE_DOCKER_TLS_VERIFY
    try:
        return TLSConfig(
            client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")),
            ca_cert=str(certs / "ca.pem") if verify else None,
            verify=verify,
        )
    except TLSParameterError as exc:
        raise NotConfigured(f"docker: TLS files in {certs} (GRACE_DOCKER_CERT_PATH): {exc}") from exc


class EngineAPI(docker.APIClient):
    """The docker SDK's low-level client; with TLS, the configured CA wins over the environment.

    requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` replace a session's own CA
    (psf/requests#3829), which would verify the engine against the wrong authorities.
    """

    def _retrieve_server_version(self) -> str:
        if self.base_url.startswith("https://"):
            self.trust_env = False
        return super()._retrieve_server_version()


@contextmanager
def engine(host: str = "", timeout: float | None = None) -> Iterator[EngineAPI]:
    """A client for the engine, closed afterwards; ActionUnavailable when the engine does not answer."""
    url = engine_url(host)
    tls = _tls(url)
    try:
        # version="auto" asks the engine which API it speaks (engines drop old API versions).
        api = EngineAPI(
            base_url=url, version="auto", timeout=timeout or settings.GRACE_DOCKER_TIMEOUT, tls=tls or False
        )
    except DockerException as exc:
        raise _fail(ActionUnavailable, f"docker: cannot reach the engine at {url}: {exc}") from exc
    try:
        yield api
    finally:
        api.close()


def probe(timeout: float) -> dict:
    """The engine's version, within ``timeout`` seconds."""
    with engine(timeout=timeout) as api, docker_errors("version"):
        version = api.version()
    return {
        "engine_version": version.get("Version", ""),
        "api_version": version.get("ApiVersion", ""),
        "os": version.get("Os", ""),
        "host": engine_url(),
    }


class _EngineParams(serializers.Serializer):
    host = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    stop_timeout = serializers.IntegerField(min_value=0, max_value=300, default=10)

    def validate_host(self, value: str) -> str:
        if value and value not in settings.GRACE_DOCKER_HOSTS:
            raise serializers.ValidationError(f"no engine named {value!r} in GRACE_DOCKER_HOSTS")
        return value


# --- docker.container.restart ---------------------------------------------------------------------


class ContainerRestartParams(_EngineParams):
    container = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _container_facts(attrs: dict) -> dict:
    state = attrs.get("State", {})
    check = (attrs.get("Config") or {}).get("Healthcheck") or {}
    has_check = bool(check.get("Test")) and check["Test"][0] != "NONE"
    return {
        "exists": True,
        "status": state.get("Status", ""),
        "running": bool(state.get("Running")),
        "started_at": state.get("StartedAt", ""),
        "health": (state.get("Health") or {}).get("Status", "none") if has_check else "none",
        "has_healthcheck": has_check,
        "restart_count": attrs.get("RestartCount", 0),
        "exit_code": state.get("ExitCode"),
    }


def container_observe(params: dict) -> dict:
    with engine(params.get("host", "")) as api, docker_errors(f"inspect container {params['container']}"):
        return _container_facts(api.inspect_container(params["container"]))


def container_snapshot(params: dict, directory: Path) -> dict:
    facts = container_observe(params)
    return {k: facts[k] for k in ("status", "started_at", "health", "restart_count")}


def container_execute(params: dict) -> dict:
    name = params["container"]
    with engine(params.get("host", "")) as api, docker_errors(f"restart container {name}"):
        api.restart(name, timeout=params.get("stop_timeout", 10))
        facts = _container_facts(api.inspect_container(name))
    return {"container": name, "status": facts["status"], "started_at": facts["started_at"]}


registry.register(
    Action(
        name="docker.container.restart",
        family=FAMILY,
        params=ContainerRestartParams,
        observe=container_observe,
        snapshot=container_snapshot,
        execute=container_execute,
        tier=1,
        idempotent=False,
        timeout=120,
        target_param="container",
        scope_params=("host",),
        resource_kind="docker_container",
        binds={"container": "target", "host": "scope.engine"},
        description="Restart a container; it must be running again (and healthy, when it has a health check).",
        default_contract=[
            {"field": "started_at", "op": "!=", "value": "{snapshot.started_at}"},
            {"field": "status", "op": "==", "value": "running", "within": 30},
            {"field": "health", "op": "in", "value": ["healthy", "none"], "within": 90},
        ],
    )
)


# --- docker.service.scale -------------------------------------------------------------------------


class ServiceScaleParams(_EngineParams):
    project = serializers.RegexField(r"^[a-z0-9][a-z0-9_-]{0,62}$")
    service = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    replicas = serializers.IntegerField(min_value=0, max_value=100)


def _number(attrs: dict) -> int:
    raw = (attrs.get("Labels") or {}).get(NUMBER_LABEL, "0")
    return int(raw) if raw.isdigit() else 0


def _service_containers(api: EngineAPI, project: str, service: str) -> list[dict]:
    """The service's containers (summaries), oldest first."""
    found = api.containers(all=True, filters={"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]})
    found = [c for c in found if (c.get("Labels") or {}).get(ONEOFF_LABEL, "False") != "True"]
    return sorted(found, key=lambda c: (c.get("Created", 0), _number(c)))


def _running(containers: list[dict]) -> list[dict]:
    return [c for c in containers if c.get("State") == "running"]


def service_observe(params: dict) -> dict:
    with engine(params.get("host", "")) as api, docker_errors(f"list service {params['service']}"):
        containers = _service_containers(api, params["project"], params["service"])
    running = _running(containers)
    return {
        "running_replicas": len(running),
        "containers": len(containers),
        "stopped": len(containers) - len(running),
    }


def service_snapshot(params: dict, directory: Path) -> dict:
    return {"replicas": service_observe(params)["running_replicas"]}


def _clone(api: EngineAPI, template_id: str, project: str, service: str, number: int) -> str:
    """Create (not start) a container of the service from an existing container's configuration."""
    info = api.inspect_container(template_id)
    config = info["Config"]
    host_config = info["HostConfig"]
    labels = dict(config.get("Labels") or {})
    labels[NUMBER_LABEL] = str(number)
    networking = None
    network = host_config.get("NetworkMode") or ""
    if network and network not in ("none", "host", "bridge", "default") and not network.startswith("container:"):
        networking = api.create_networking_config({network: api.create_endpoint_config(aliases=[service])})
    created = api.create_container(
        image=config["Image"],
        command=config.get("Cmd"),
        entrypoint=config.get("Entrypoint"),
        environment=config.get("Env"),
        labels=labels,
        name=f"{project}-{service}-{number}",
        working_dir=config.get("WorkingDir") or None,
        user=config.get("User") or None,
        healthcheck=config.get("Healthcheck"),
        stop_signal=config.get("StopSignal"),
        volumes=list(config.get("Volumes") or {}) or None,
        tty=bool(config.get("Tty")),
        stdin_open=bool(config.get("OpenStdin")),
        host_config=host_config,
        networking_config=networking,
    )
    return created["Id"]


def _scale(params: dict, target: int) -> dict:
    project, service = params["project"], params["service"]
    with engine(params.get("host", "")) as api, docker_errors(f"scale {project}/{service} to {target}"):
        containers = _service_containers(api, project, service)
        if not containers:
            raise ActionError(f"docker: service {service!r} of project {project!r} has no container to scale from")
        running = _running(containers)
        result: dict[str, Any] = {"previous": len(running), "replicas": target, "started": [], "created": []}
        result["stopped"] = []
        if target < len(running):
            # The newest go first.
            for container in reversed(running[target:]):
                api.stop(container["Id"], timeout=params.get("stop_timeout", 10))
                result["stopped"].append(container["Names"][0].lstrip("/"))
        need = target - len(running)
        stopped = sorted((c for c in containers if c.get("State") != "running"), key=_number)
        for container in stopped[: max(need, 0)]:
            api.start(container["Id"])
            result["started"].append(container["Names"][0].lstrip("/"))
        need -= len(result["started"])
        template = (running or containers)[-1]["Id"]
        number = max(_number(c) for c in containers)
        for _ in range(max(need, 0)):
            number += 1
            container_id = _clone(api, template, project, service, number)
            api.start(container_id)
            result["created"].append(f"{project}-{service}-{number}")
    return result


def service_execute(params: dict) -> dict:
    return _scale(params, params["replicas"])


def service_rollback(params: dict, state: dict, directory: Path) -> dict:
    return _scale(params, int(state["replicas"]))


registry.register(
    Action(
        name="docker.service.scale",
        family=FAMILY,
        params=ServiceScaleParams,
        observe=service_observe,
        snapshot=service_snapshot,
        execute=service_execute,
        rollback=service_rollback,
        tier=2,
        idempotent=True,
        timeout=180,
        target_param="service",
        scope_params=("host", "project"),
        resource_kind="docker_service",
        binds={"service": "target", "project": "scope.project", "host": "scope.engine"},
        description="Scale a compose service's running containers up (from its existing config) or down.",
        default_contract=[{"field": "running_replicas", "op": "==", "value": "{params.replicas}", "within": 60}],
    )
)
