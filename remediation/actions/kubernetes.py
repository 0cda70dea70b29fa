"""Kubernetes executors through the official client: rollout restart, scale, pod delete.

The cluster is the pod's own service account when ``GRACE_KUBE_IN_CLUSTER``
is on, else the kubeconfig ``GRACE_KUBECONFIG`` (default ``$KUBECONFIG``, then
``~/.kube/config``) with ``GRACE_KUBE_CONTEXT`` or a step's ``context``. Every
call carries ``_request_timeout``; connection errors are retried by urllib3 a
couple of times, requests that reached the server never are. A rejected
identity (401/403) or an unreachable server makes the family unavailable;
conflicts, throttling and server errors are transient.

``k8s.deployment.rollout_restart`` does what ``kubectl rollout restart`` does:
it stamps ``kubectl.kubernetes.io/restartedAt`` on the pod template. Its
rollback restores the previous stamp (``kubectl rollout undo`` to the revision
before) and the replica count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from rest_framework import serializers
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from remediation.actions.base import (
    Action,
    ActionError,
    ActionRefused,
    ActionUnavailable,
    TransientActionError,
    registry,
)
from remediation.cloud_status import NotConfigured, note_error

FAMILY = "kubernetes"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
# Every Kubernetes action acts on an inventory deployment: these parameters come from it.
DEPLOYMENT_BINDS = {"deployment": "target", "namespace": "scope.namespace", "context": "scope.context"}


def _fail(cls: type[ActionError], message: str) -> ActionError:
    if cls is not ActionError and cls is not ActionRefused:
        note_error(FAMILY, message)
    return cls(message)


@contextmanager
def k8s_errors(what: str) -> Iterator[None]:
    """Translate client and transport errors into the action error classes."""
    try:
        yield
    except ApiException as exc:
        message = f"kubernetes: {what}: {exc.status} {exc.reason}"
        if exc.status in (401, 403):
            raise _fail(ActionUnavailable, f"{message} (check the credentials and the Role GRACE is bound to)") from exc
        if exc.status in (409, 429, 500, 502, 503, 504):
            raise _fail(TransientActionError, message) from exc
        if exc.status == 0:
            raise _fail(ActionUnavailable, message) from exc
        raise _fail(ActionError, message) from exc
    except MaxRetryError as exc:
        if isinstance(exc.reason, ReadTimeoutError):
            raise _fail(TransientActionError, f"kubernetes: {what}: timed out") from exc
        raise _fail(ActionUnavailable, f"kubernetes: cannot reach the API server ({exc.reason})") from exc
    except (NewConnectionError, ConnectionError) as exc:
        raise _fail(ActionUnavailable, f"kubernetes: cannot reach the API server ({exc})") from exc
    except (ReadTimeoutError, ProtocolError, TimeoutError) as exc:
        raise _fail(TransientActionError, f"kubernetes: {what}: {exc}") from exc
    except HTTPError as exc:
        raise _fail(ActionError, f"kubernetes: {what}: {exc}") from exc


def configuration(context: str = "", *, retries: int = 2) -> k8s.Configuration:
    """Client configuration from the pod's service account or a kubeconfig; NotConfigured when neither exists."""
    cfg = k8s.Configuration()
    try:
        if settings.GRACE_KUBE_IN_CLUSTER:
            k8s_config.load_incluster_config(client_configuration=cfg)
        else:
            path = settings.GRACE_KUBECONFIG or os.path.expanduser("~/.kube/config")
            if not any(os.path.exists(os.path.expanduser(p)) for p in path.split(os.pathsep) if p):
                raise NotConfigured(
                    f"kubernetes: no kubeconfig at {path} (set GRACE_KUBECONFIG, or GRACE_KUBE_IN_CLUSTER in a pod)"
                )
            k8s_config.load_kube_config(
                config_file=path,
                context=context or settings.GRACE_KUBE_CONTEXT or None,
                client_configuration=cfg,
                persist_config=False,
            )
    except ConfigException as exc:
        raise NotConfigured(f"kubernetes: {exc}") from exc
    # Only failed connections are retried: a request that reached the server is never repeated.
    cfg.retries = Retry(total=retries, connect=retries, read=0, status=0, other=0, backoff_factor=0.2)
    return cfg


@contextmanager
def api(context: str = "", *, retries: int = 2) -> Iterator[k8s.ApiClient]:
    with k8s.ApiClient(configuration(context, retries=retries)) as client:
        yield client


def _timeout(seconds: float | None = None) -> tuple[float, float]:
    seconds = seconds or settings.GRACE_KUBE_TIMEOUT
    return (min(seconds, 5.0), seconds)


def probe(timeout: float) -> dict:
    """The API server's version, within ``timeout`` seconds."""
    with api(retries=0) as client, k8s_errors("get /version"):
        version = k8s.VersionApi(client).get_code(_request_timeout=(timeout, timeout))
        host = client.configuration.host
    return {"server_version": version.git_version, "platform": version.platform, "host": host}


class _DeploymentParams(serializers.Serializer):
    namespace = serializers.RegexField(DNS_LABEL, max_length=63)
    deployment = serializers.RegexField(DNS_SUBDOMAIN, max_length=253)
    context = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


def _read_deployment(client: k8s.ApiClient, params: dict) -> Any:
    with k8s_errors(f"read deployment {params['namespace']}/{params['deployment']}"):
        return k8s.AppsV1Api(client).read_namespaced_deployment(
            params["deployment"], params["namespace"], _request_timeout=_timeout()
        )


def _patch_deployment(client: k8s.ApiClient, params: dict, body: dict) -> Any:
    with k8s_errors(f"patch deployment {params['namespace']}/{params['deployment']}"):
        return k8s.AppsV1Api(client).patch_namespaced_deployment(
            params["deployment"], params["namespace"], body, _request_timeout=_timeout()
        )


def _scale_deployment(client: k8s.ApiClient, params: dict, replicas: int) -> None:
    with k8s_errors(f"scale deployment {params['namespace']}/{params['deployment']} to {replicas}"):
        k8s.AppsV1Api(client).patch_namespaced_deployment_scale(
            params["deployment"], params["namespace"], {"spec": {"replicas": replicas}}, _request_timeout=_timeout()
        )


def deployment_facts(deployment: Any) -> dict:
    """The rollout's state, judged as ``kubectl rollout status`` judges it."""
    spec = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    generation = deployment.metadata.generation or 0
    observed = status.observed_generation or 0
    updated = status.updated_replicas or 0
    ready = status.ready_replicas or 0
    available = status.available_replicas or 0
    current = status.replicas or 0
    caught_up = observed >= generation
    annotations = (deployment.spec.template.metadata.annotations if deployment.spec.template.metadata else None) or {}
    return {
        "replicas": spec,
        "generation": generation,
        "observed_generation": observed,
        "generation_caught_up": caught_up,
        "updated_replicas": updated,
        "ready_replicas": ready,
        "available_replicas": available,
        "unavailable_replicas": status.unavailable_replicas or 0,
        "all_ready": caught_up and ready == spec,
        "rollout_complete": caught_up and updated == spec and current == updated and available == updated,
        "restarted_at": annotations.get(RESTARTED_AT),
        "paused": bool(deployment.spec.paused),
    }


def deployment_observe(params: dict) -> dict:
    with api(params.get("context", "")) as client:
        return deployment_facts(_read_deployment(client, params))


def deployment_snapshot(params: dict, directory: Path) -> dict:
    facts = deployment_observe(params)
    return {k: facts[k] for k in ("replicas", "restarted_at", "generation")}


def _restore(params: dict, state: dict, *, template: bool) -> dict:
    with api(params.get("context", "")) as client:
        if template:
            annotations = {RESTARTED_AT: state.get("restarted_at")}  # None removes the stamp
            _patch_deployment(client, params, {"spec": {"template": {"metadata": {"annotations": annotations}}}})
        _scale_deployment(client, params, int(state["replicas"]))
    return {"replicas": state["replicas"], "restarted_at": state.get("restarted_at") if template else None}


# --- k8s.deployment.rollout_restart -------------------------------------------------------------


class RolloutRestartParams(_DeploymentParams):
    skip_if_ready = serializers.BooleanField(
        default=False, help_text="Do nothing when the rollout is complete and every replica is ready."
    )


def rollout_restart_execute(params: dict) -> dict:
    with api(params.get("context", "")) as client:
        facts = deployment_facts(_read_deployment(client, params))
        if facts["paused"]:
            raise ActionRefused(f"kubernetes: deployment {params['deployment']} is paused: resume it before a restart")
        if params.get("skip_if_ready") and facts["rollout_complete"] and facts["all_ready"]:
            return {"skipped": True, "reason": "every replica is ready", "ready_replicas": facts["ready_replicas"]}
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        patched = _patch_deployment(client, params, patch)
    return {"skipped": False, "restarted_at": stamp, "generation": patched.metadata.generation}


def rollout_restart_rollback(params: dict, state: dict, directory: Path) -> dict:
    """Back to the previous revision (the stamp before, or none) and the replica count before."""
    return _restore(params, state, template=True)


registry.register(
    Action(
        name="k8s.deployment.rollout_restart",
        family=FAMILY,
        params=RolloutRestartParams,
        observe=deployment_observe,
        snapshot=deployment_snapshot,
        execute=rollout_restart_execute,
        rollback=rollout_restart_rollback,
        tier=2,
        idempotent=False,
        timeout=60,
        target_param="deployment",
        scope_params=("context", "namespace"),
        resource_kind="k8s_deployment",
        binds=DEPLOYMENT_BINDS,
        description="Restart a deployment's pods the way kubectl rollout restart does; wait for the rollout.",
        default_contract=[
            {"field": "restarted_at", "op": "!=", "value": "{snapshot.restarted_at}"},
            {"field": "rollout_complete", "op": "==", "value": True, "within": 300},
            {"field": "ready_replicas", "op": ">=", "value": "{snapshot.replicas}", "within": 300},
        ],
    )
)


# --- k8s.deployment.scale -----------------------------------------------------------------------


class DeploymentScaleParams(_DeploymentParams):
    replicas = serializers.IntegerField(min_value=0, max_value=1000)


def scale_execute(params: dict) -> dict:
    with api(params.get("context", "")) as client:
        previous = deployment_facts(_read_deployment(client, params))["replicas"]
        _scale_deployment(client, params, params["replicas"])
    return {"previous": previous, "replicas": params["replicas"]}


def scale_rollback(params: dict, state: dict, directory: Path) -> dict:
    return _restore(params, state, template=False)


registry.register(
    Action(
        name="k8s.deployment.scale",
        family=FAMILY,
        params=DeploymentScaleParams,
        observe=deployment_observe,
        snapshot=deployment_snapshot,
        execute=scale_execute,
        rollback=scale_rollback,
        tier=2,
        idempotent=True,
        timeout=60,
        target_param="deployment",
        scope_params=("context", "namespace"),
        resource_kind="k8s_deployment",
        binds=DEPLOYMENT_BINDS,
        description="Scale a deployment; the new replica count must be ready.",
        default_contract=[
            {"field": "replicas", "op": "==", "value": "{params.replicas}"},
            {"field": "ready_replicas", "op": "==", "value": "{params.replicas}", "within": 300},
            {"field": "rollout_complete", "op": "==", "value": True, "within": 300},
        ],
    )
)


# --- k8s.pod.delete -----------------------------------------------------------------------------


class PodDeleteParams(serializers.Serializer):
    namespace = serializers.RegexField(DNS_LABEL, max_length=63)
    deployment = serializers.RegexField(DNS_SUBDOMAIN, max_length=253, help_text="The deployment the pod belongs to.")
    pod = serializers.RegexField(DNS_SUBDOMAIN, max_length=253)
    context = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    grace_period_seconds = serializers.IntegerField(min_value=0, max_value=3600, default=30)
    only_if_crashlooping = serializers.BooleanField(default=True)


def _pod_facts(pod: Any) -> dict:
    statuses = pod.status.container_statuses or []
    waiting = [s.state.waiting.reason for s in statuses if s.state and s.state.waiting and s.state.waiting.reason]
    owners = pod.metadata.owner_references or []
    controller = next((o for o in owners if o.controller), None)
    return {
        "exists": True,
        "uid": pod.metadata.uid,
        "phase": pod.status.phase,
        "ready": bool(statuses) and all(s.ready for s in statuses),
        "crash_looping": "CrashLoopBackOff" in waiting,
        "waiting_reasons": waiting,
        "restart_count": sum(s.restart_count or 0 for s in statuses),
        "controller": f"{controller.kind}/{controller.name}" if controller else "",
    }


def _read_pod(client: k8s.ApiClient, params: dict) -> dict:
    try:
        with k8s_errors(f"read pod {params['namespace']}/{params['pod']}"):
            pod = k8s.CoreV1Api(client).read_namespaced_pod(
                params["pod"], params["namespace"], _request_timeout=_timeout()
            )
    except ActionError as exc:
        if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
            return {"exists": False, "uid": None, "crash_looping": False, "ready": False}
        raise
    return _pod_facts(pod)


def pod_observe(params: dict) -> dict:
    with api(params.get("context", "")) as client:
        return _read_pod(client, params)


def pod_snapshot(params: dict, directory: Path) -> dict:
    facts = pod_observe(params)
    if not facts["exists"]:
        raise ActionRefused(
            f"kubernetes: no pod {params['pod']!r} in namespace {params['namespace']}: nothing to delete"
        )
    return {k: facts.get(k) for k in ("uid", "controller", "restart_count")}


def _check_belongs(client: k8s.ApiClient, params: dict, name: str) -> None:
    """Refuse a pod that the step's deployment does not select: a label may name a pod, never another
    deployment's (the pod's labels must match the deployment's selector, in the deployment's namespace)."""
    deployment = _read_deployment(client, params)
    selector = (deployment.spec.selector.match_labels or {}) if deployment.spec and deployment.spec.selector else {}
    with k8s_errors(f"read pod {name}"):
        pod = k8s.CoreV1Api(client).read_namespaced_pod(params["pod"], params["namespace"], _request_timeout=_timeout())
    labels = pod.metadata.labels or {}
    if not selector or any(labels.get(key) != value for key, value in selector.items()):
        raise ActionRefused(
            f"kubernetes: pod {name} is not selected by deployment {params['namespace']}/{params['deployment']}: "
            "nothing was deleted"
        )


def pod_execute(params: dict) -> dict:
    name = f"{params['namespace']}/{params['pod']}"
    with api(params.get("context", "")) as client:
        facts = _read_pod(client, params)
        if not facts["exists"]:
            return {"deleted": False, "reason": f"pod {name} is already gone"}
        if not facts["controller"]:
            raise ActionRefused(f"kubernetes: pod {name} has no controller: deleting it would not bring it back")
        _check_belongs(client, params, name)
        if params.get("only_if_crashlooping", True) and not facts["crash_looping"]:
            raise ActionRefused(f"kubernetes: pod {name} is not crash-looping (only_if_crashlooping is on)")
        with k8s_errors(f"delete pod {name}"):
            k8s.CoreV1Api(client).delete_namespaced_pod(
                params["pod"],
                params["namespace"],
                grace_period_seconds=params.get("grace_period_seconds", 30),
                _request_timeout=_timeout(),
            )
    return {"deleted": True, "uid": facts["uid"], "controller": facts["controller"]}


registry.register(
    Action(
        name="k8s.pod.delete",
        family=FAMILY,
        params=PodDeleteParams,
        observe=pod_observe,
        snapshot=pod_snapshot,
        execute=pod_execute,
        tier=1,
        idempotent=True,
        timeout=60,
        target_param="deployment",
        scope_params=("context", "namespace"),
        resource_kind="k8s_deployment",
        binds=DEPLOYMENT_BINDS,
        description="Delete a crash-looping pod that a controller owns, so the controller replaces it.",
        default_contract=[{"field": "uid", "op": "!=", "value": "{snapshot.uid}", "within": 120}],
    )
)
