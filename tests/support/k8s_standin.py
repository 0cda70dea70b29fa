"""A stand-in Kubernetes API server for tests (no real cluster can run on these machines).

It speaks, over real HTTP on loopback, the part of the API that GRACE's
Kubernetes executors use through the official client:

- ``GET /version``
- ``GET|PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}`` (merge and strategic-merge
  patches of maps and scalars, which is all GRACE sends)
- ``GET|PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``
- ``GET /api/v1/namespaces/{ns}/pods`` (``labelSelector`` of ``k=v`` terms),
  ``GET|DELETE /api/v1/namespaces/{ns}/pods/{name}``

Requests need ``Authorization: Bearer <token>`` (401 otherwise). A simulated
deployment controller moves status a short delay after each spec change: it
catches ``observedGeneration`` up and brings ``readyReplicas`` to the spec,
replacing pods when the pod template changed and recreating deleted pods.
Told to fail (``standin.fail_rollouts = True``), it still observes the new
generation but new pods never become ready, like a rollout stuck on a broken
image. It is a test double of the cluster only: GRACE's own code runs unchanged.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

TOKEN = "standin-token"
DEPLOYMENT = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)(/scale)?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386 merge patch (null deletes a key)."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class Cluster:
    """The stand-in's state and its simulated deployment controller."""

    def __init__(self, delay: float) -> None:
        self.lock = threading.RLock()
        self.delay = delay
        self.fail_rollouts = False
        self.deployments: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.due: dict[tuple[str, str], float] = {}  # deployment -> when the controller acts
        self.requests: list[tuple[str, str]] = []

    # --- arranging the world ---------------------------------------------------------------------

    def add_deployment(self, namespace: str, name: str, replicas: int = 2, *, crashloop: int = 0) -> dict:
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": _now(),
                "labels": {"app": name},
                "annotations": {},
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": {}},
                    "spec": {"containers": [{"name": name, "image": f"example/{name}:1"}]},
                },
            },
            "status": {},
        }
        with self.lock:
            self.deployments[(namespace, name)] = deployment
            self._settle(deployment, failing=False)
            for pod in list(self._pods_of(deployment))[:crashloop]:
                self._crashloop(pod)
            self._refresh(deployment)
        return deployment

    def pods_of(self, namespace: str, name: str) -> list[dict]:
        with self.lock:
            return copy.deepcopy(self._pods_of(self.deployments[(namespace, name)]))

    # --- the simulated controller -----------------------------------------------------------------

    def _pods_of(self, deployment: dict) -> list[dict]:
        meta = deployment["metadata"]
        return [
            p
            for p in self.pods.values()
            if p["metadata"]["namespace"] == meta["namespace"] and p["metadata"]["labels"].get("app") == meta["name"]
        ]

    @staticmethod
    def _template_hash(deployment: dict) -> str:
        return uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(deployment["spec"]["template"], sort_keys=True)).hex[:10]

    def _new_pod(self, deployment: dict, ready: bool) -> dict:
        meta = deployment["metadata"]
        rs = f"{meta['name']}-{self._template_hash(deployment)}"
        name = f"{rs}-{secrets.token_hex(3)[:5]}"
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
                "labels": {"app": meta["name"], "pod-template-hash": self._template_hash(deployment)},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": meta["uid"], "controller": True}
                ],
            },
            "spec": {"containers": [copy.deepcopy(container)]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": ready,
                        "restartCount": 0,
                        "started": ready,
                        "state": {"running": {"startedAt": _now()}},
                    }
                ],
            },
        }
        self.pods[(meta["namespace"], name)] = pod
        return pod

    @staticmethod
    def _crashloop(pod: dict) -> None:
        status = pod["status"]["containerStatuses"][0]
        status.update(
            ready=False,
            restartCount=7,
            state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}},
        )

    @staticmethod
    def _is_ready(pod: dict) -> bool:
        return all(s["ready"] for s in pod["status"]["containerStatuses"])

    def _settle(self, deployment: dict, *, failing: bool) -> None:
        """What the controller does once it has observed the deployment's latest generation.

        The current revision is scaled to the spec (new pods are ready, or crash-loop when the
        rollout fails); pods of older revisions go once the current one is fully ready.
        """
        spec = deployment["spec"]["replicas"]
        current = self._template_hash(deployment)
        pods = self._pods_of(deployment)
        new = [p for p in pods if p["metadata"]["labels"]["pod-template-hash"] == current]
        while len(new) < spec:
            pod = self._new_pod(deployment, ready=not failing)
            if failing:
                self._crashloop(pod)
            new.append(pod)
        for pod in new[spec:]:  # the newest go first
            self._delete(pod)
        new = new[:spec]
        if all(self._is_ready(p) for p in new):
            for pod in pods:
                if pod["metadata"]["labels"]["pod-template-hash"] != current:
                    self._delete(pod)
        deployment["status"]["observedGeneration"] = deployment["metadata"]["generation"]
        self._refresh(deployment)

    def _refresh(self, deployment: dict) -> None:
        """Status counts from the pods as they are now (observedGeneration moves only in _settle)."""
        current = self._template_hash(deployment)
        pods = self._pods_of(deployment)
        ready = sum(1 for p in pods if self._is_ready(p))
        status = {
            "observedGeneration": deployment["status"].get("observedGeneration", 0),
            "replicas": len(pods),
            "updatedReplicas": sum(1 for p in pods if p["metadata"]["labels"]["pod-template-hash"] == current),
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        if len(pods) > ready:
            status["unavailableReplicas"] = len(pods) - ready
        deployment["status"] = status

    def _delete(self, pod: dict) -> None:
        self.pods.pop((pod["metadata"]["namespace"], pod["metadata"]["name"]), None)

    def tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            for key, due in list(self.due.items()):
                if due <= now:
                    del self.due[key]
                    if key in self.deployments:
                        self._settle(self.deployments[key], failing=self.fail_rollouts)

    def changed(self, key: tuple[str, str], before: dict, after: dict) -> None:
        if before["spec"] != after["spec"]:
            after["metadata"]["generation"] += 1
            self.due[key] = time.monotonic() + self.delay

    def pod_deleted(self, pod: dict) -> None:
        owner = next((d for d in self.deployments.values() if pod in self._pods_of(d)), None)
        self._delete(pod)
        if owner is not None:
            self._refresh(owner)
            key = (owner["metadata"]["namespace"], owner["metadata"]["name"])
            self.due.setdefault(key, time.monotonic() + self.delay)


class _Handler(BaseHTTPRequestHandler):
    cluster: Cluster

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, code: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        self.cluster.requests.append((method, url.path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
        if url.path in ("/version", "/version/") and method == "GET":
            return self._send(200, VERSION)
        with self.cluster.lock:
            if match := DEPLOYMENT.match(url.path):
                return self._deployment(method, (match[1], match[2]), bool(match[3]))
            if match := PODS.match(url.path):
                return self._pods(method, match[1], match[2], parse_qs(url.query))
        return self._send(404, _status(404, "NotFound", f"the server could not find {url.path}"))

    def _deployment(self, method: str, key: tuple[str, str], scale: bool) -> None:
        deployment = self.cluster.deployments.get(key)
        if deployment is None:
            return self._send(404, _status(404, "NotFound", f'deployments.apps "{key[1]}" not found'))
        if method == "PATCH":
            patch = self._body()
            if scale:
                patch = {"spec": {"replicas": patch.get("spec", {}).get("replicas", deployment["spec"]["replicas"])}}
            updated = merge_patch(deployment, {"spec": patch.get("spec", {}), "metadata": patch.get("metadata", {})})
            self.cluster.changed(key, deployment, updated)
            deployment = self.cluster.deployments[key] = updated
        elif method != "GET":
            return self._send(405, _status(405, "MethodNotAllowed", method))
        if scale:
            return self._send(200, _scale(deployment))
        return self._send(200, deployment)

    def _pods(self, method: str, namespace: str, name: str | None, query: dict) -> None:
        if name is None:
            wanted = dict(term.split("=", 1) for s in query.get("labelSelector", []) for term in s.split(",") if term)
            items = [
                p
                for p in self.cluster.pods.values()
                if p["metadata"]["namespace"] == namespace
                and all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())
            ]
            return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
        pod = self.cluster.pods.get((namespace, name))
        if pod is None:
            return self._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
        if method == "DELETE":
            self.cluster.pod_deleted(pod)
        return self._send(200, pod)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


def _scale(deployment: dict) -> dict:
    meta = deployment["metadata"]
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        "spec": {"replicas": deployment["spec"]["replicas"]},
        "status": {"replicas": deployment["status"].get("replicas", 0), "selector": f"app={meta['name']}"},
    }


VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-grace-standin",
    "gitCommit": "0000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class StandIn:
    """``with StandIn() as k8s:`` serves on 127.0.0.1 until the block ends; ``k8s.cluster`` is its state."""

    def __init__(self, delay: float = 0.3) -> None:
        self.cluster = Cluster(delay)
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True),
            threading.Thread(target=self._controller, daemon=True),
        ]

    def _controller(self) -> None:
        while not self._stop.wait(0.02):
            self.cluster.tick()

    @property
    def fail_rollouts(self) -> bool:
        return self.cluster.fail_rollouts

    @fail_rollouts.setter
    def fail_rollouts(self, value: bool) -> None:
        self.cluster.fail_rollouts = value

    def add_deployment(self, namespace: str, name: str, replicas: int = 2, *, crashloop: int = 0) -> dict:
        return self.cluster.add_deployment(namespace, name, replicas, crashloop=crashloop)

    def deployment(self, namespace: str, name: str) -> dict:
        with self.cluster.lock:
            return copy.deepcopy(self.cluster.deployments[(namespace, name)])

    def write_kubeconfig(self, path: Path, *, token: str = TOKEN) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "grace", "user": {"token": token}}],
            "contexts": [
                {"name": "standin", "context": {"cluster": "standin", "user": "grace", "namespace": "default"}}
            ],
            "current-context": "standin",
        }
        path.write_text(json.dumps(config))  # JSON is YAML: the client's loader reads it as is
        return path

    def __enter__(self) -> StandIn:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
