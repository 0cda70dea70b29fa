"""A real Alertmanager HA pair (two unclustered instances) delivering to GRACE's webhook on a live server."""

import shutil
import socket
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import requests

from incidents.models import Incident
from tests.incidents.conftest import WEBHOOK_TOKEN
from tests.support.runs import wait_for as poll_until

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _alertmanager_binary():
    if BINARY is None:
        pytest.fail(
            "prometheus-alertmanager is not installed: scripts/services.d/alertmanager.start installs it "
            "when the suite runs through `make test`"
        )


CONFIG = """
route:
  receiver: grace
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: grace
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token_file}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    return poll_until(predicate, timeout=timeout, interval=0.1, what=what)


@pytest.fixture
def alertmanagers(live_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(WEBHOOK_TOKEN)
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(url=f"{live_server.url}/api/webhooks/alertmanager/", token_file=token_file))
    procs, urls = [], []
    for name in ("am-a", "am-b"):
        port = free_port()
        storage = tmp_path / name
        storage.mkdir()
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        argv = [
            BINARY,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--storage.path={storage}",
        ]
        procs.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            wait_for(lambda url=url: _ready(url), what=f"Alertmanager at {url} ready")
        yield urls
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(10)
            log.close()


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def post_alert(url: str, starts: datetime, ends: datetime | None = None) -> None:
    alert = {
        "labels": {"alertname": "DatabaseLocked", "service": "orders-db", "severity": "critical"},
        "annotations": {"summary": "orders-db locked"},
        "startsAt": starts.isoformat(),
        "generatorURL": "http://example/probe",
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    response = requests.post(f"{url}/api/v2/alerts", json=[alert], timeout=5)
    assert response.status_code == 200, response.text


def test_an_ha_pair_fires_one_incident_and_its_resolution_resolves_it(alertmanagers, default_rules, celery_worker):
    # Deliveries are acknowledged once stored (202); the worker's intake consumers apply them.
    starts = datetime.now(UTC) - timedelta(seconds=5)
    for url in alertmanagers:
        post_alert(url, starts)

    incident = wait_for(
        lambda: Incident.objects.filter(occurrences__gte=2).first(), what="both deliveries absorbed by one incident"
    )
    assert Incident.objects.count() == 1
    assert (incident.source, incident.diagnosis_code) == ("alertmanager", "database_locked")
    assert incident.status in ("open", "healing", "escalated")  # a pipeline worker may have picked it up

    ended = datetime.now(UTC)
    for url in alertmanagers:
        post_alert(url, starts, ended)

    wait_for(
        lambda: Incident.objects.filter(pk=incident.pk, status="resolved").exists(),
        what="the resolved delivery resolved the incident",
    )
