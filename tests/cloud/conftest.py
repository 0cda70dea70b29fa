"""Fixtures for the cloud executors: moto server, a private dockerd, the Kubernetes stand-in.

moto and dockerd are started for the whole run by ``scripts/services.d/cloud.start``
(through ``scripts/with-services.sh``); when one could not start, the tests that
need it fail with the reason the hook recorded.
"""

from __future__ import annotations

import os
import uuid
from types import SimpleNamespace

import docker
import pytest
import requests

from grace_site.celery import app as celery_app
from remediation.choices import RunStatus
from remediation.models import HealRun
from tests.support.runs import wait_for


def _service(url_var: str, error_var: str, what: str) -> str:
    url = os.environ.get(url_var)
    if not url:
        reason = os.environ.get(error_var) or f"{url_var} is not set: run the tests through scripts/with-services.sh"
        pytest.fail(f"{what} is not available: {reason}", pytrace=False)
    return url


@pytest.fixture
def moto(settings, monkeypatch, tmp_path):
    """GRACE's AWS settings pointed at a freshly reset moto server, with throwaway credentials."""
    url = _service("GRACE_TEST_MOTO_URL", "GRACE_TEST_MOTO_ERROR", "moto_server")
    requests.post(f"{url}/moto-api/reset", timeout=5).raise_for_status()
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    settings.GRACE_AWS_ENDPOINT_URL = url
    settings.GRACE_AWS_REGION = "us-east-1"
    settings.GRACE_AWS_PROFILE = ""
    return url


@pytest.fixture
def docker_engine(settings):
    """A docker SDK client on the private test engine; GRACE's settings point at it. Containers made here go."""
    url = _service("GRACE_TEST_DOCKER_HOST", "GRACE_TEST_DOCKER_ERROR", "the Docker engine")
    settings.GRACE_DOCKER_HOST = url
    settings.GRACE_DOCKER_HOSTS = {}
    client = docker.DockerClient(base_url=url, version="auto", timeout=30)
    client.test_label = f"grace-test-{uuid.uuid4().hex[:8]}"
    client.test_image = os.environ.get("GRACE_TEST_DOCKER_IMAGE", "grace-test/busybox:latest")
    yield client
    for container in client.containers.list(all=True, filters={"label": client.test_label}):
        container.remove(force=True)
    client.close()


@pytest.fixture
def k8s(settings, tmp_path):
    """The Kubernetes stand-in API server on loopback, with a kubeconfig pointing GRACE at it."""
    from tests.support.k8s_standin import StandIn

    with StandIn() as standin:
        settings.GRACE_KUBECONFIG = str(standin.write_kubeconfig(tmp_path / "kubeconfig"))
        settings.GRACE_KUBE_IN_CLUSTER = False
        settings.GRACE_KUBE_CONTEXT = ""
        yield standin


@pytest.fixture(scope="module")
def cloud_worker(worker_pool, django_db_blocker, tmp_path_factory):
    """The session's worker, restarted with GRACE's cloud settings pointing at the test services."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    env = {
        "GRACE_AWS_ENDPOINT_URL": os.environ.get("GRACE_TEST_MOTO_URL", ""),
        "GRACE_AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "GRACE_DOCKER_HOST": os.environ.get("GRACE_TEST_DOCKER_HOST", ""),
        "GRACE_KUBECONFIG": str(kubeconfig),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with django_db_blocker.unblock():
            worker_pool.stop()
            name = worker_pool.ensure()
        yield SimpleNamespace(name=name, kubeconfig=kubeconfig)
        worker_pool.stop()  # the next test gets a worker with the suite's own environment


@pytest.fixture
def cloud_settles(cloud_worker):
    """After each test, wait until the worker has recorded every run's outcome and is idle.

    Emptying the tables while the worker still writes would deadlock on PostgreSQL.
    """
    yield

    def idle() -> bool:
        if HealRun.objects.filter(status__in=RunStatus.TERMINAL, outcome_record__isnull=True).exists():
            return False
        active = celery_app.control.inspect(destination=[cloud_worker.name], timeout=1).active() or {}
        return not any(active.values())

    wait_for(idle, timeout=30, what="the worker to finish the runs' follow-up work")
