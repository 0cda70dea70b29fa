"""Host agents: the stages that touch a host's resources run on that host's agent, with its own disk, and a run
for a host without a live agent waits for it instead of queueing (real workers, one per simulated host)."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import pytest

from incidents.models import DiagnosisRule
from incidents.services import Signal, ingest
from remediation.choices import RunStatus
from remediation.models import ActionAttempt, Agent, HealRun, Snapshot
from tests.remediation.conftest import checkpoint_steps, make_playbook
from tests.remediation.test_pipeline import content_sha256
from tests.support import inventory
from tests.support.processes import ALL_QUEUES, start_worker
from tests.support.runs import bloated_wal_db, wait_for, wait_for_run, wal_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def file_digest(path: Path) -> str:
    parts = [Path(f"{path}{suffix}") for suffix in ("", "-wal")]
    return hashlib.sha256(b"".join(part.read_bytes() for part in parts if part.exists())).hexdigest()


class Host:
    """A simulated machine: its own GRACE_HOST, var directory (allowed roots, snapshots) and agent process."""

    def __init__(self, name: str, root: Path):
        self.name, self.var = name, root / name
        self.managed = self.var / "managed"
        self.managed.mkdir(parents=True)
        self.agent = self.worker_name = None

    def start(self, queues: str = "") -> None:
        self.agent, self.worker_name = start_worker(
            self.var,
            queues=queues or f"heal.local.{self.name}",
            concurrency=1,
            GRACE_HOST=self.name,
            GRACE_VAR_DIR=str(self.var),
            GRACE_ALLOWED_ROOTS=str(self.managed),
        )
        wait_for(
            lambda: Agent.objects.filter(name=self.worker_name, stopped_at=None).exists(),
            fresh_reads=True,
            what=f"agent of {self.name} registered",
        )

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.kill(signal.SIGTERM)  # a clean stop: the agent says it is going
            self.agent.proc.wait(30)
            self.agent.stop()
            self.agent = None


@pytest.fixture
def hosts(tmp_path, settings):
    made = {name: Host(name, tmp_path) for name in ("host-a", "host-b")}
    for host in made.values():
        host.start()
    yield made
    for host in made.values():
        host.stop()


@pytest.fixture
def orders(hosts):
    """Service orders runs on both hosts; each host has its own SQLite file with a bloated WAL."""
    inventory.service("orders", environment="staging", hosts=["host-a", "host-b"])
    keepers, files = [], {}
    for name, host in hosts.items():
        db = host.managed / "orders.sqlite3"
        keepers.append(bloated_wal_db(db, rows=400))
        files[name] = db
        inventory.resource("orders", "sqlite", db, name=f"db-{name[-1]}", host=name)
    DiagnosisRule.objects.create(name="test: wal", code="database_wal_bloat", position=1, title_regex=r"(?i)\bWAL\b")
    yield files
    for keeper in keepers:
        keeper.close()


def raise_for(resource: str, title: str = "orders WAL"):
    return ingest(Signal(source="api", title=title, service="orders", labels={"resource": resource})).incident


def test_a_run_for_a_resource_on_host_b_is_snapshotted_executed_and_verified_by_bs_agent(celery_worker, hosts, orders):
    make_playbook("wal", "database_wal_bloat", checkpoint_steps())
    a_before = file_digest(orders["host-a"])

    run = wait_for_run(raise_for("db-b").pk)

    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert run.host == "host-b"
    assert wal_bytes(orders["host-b"]) <= 1024 * 1024  # B's file changed...
    assert file_digest(orders["host-a"]) == a_before  # ...A's did not
    snap = Snapshot.objects.get(run=run)
    assert snap.host == "host-b" and Path(snap.path).is_relative_to(hosts["host-b"].var)


def test_a_rollback_restores_bs_file_from_bs_snapshot(celery_worker, hosts, orders):
    make_playbook(
        "wal-impossible",
        "database_wal_bloat",
        checkpoint_steps(contract=[{"field": "wal_bytes", "op": "<", "value": 0}]),
    )
    a_before = file_digest(orders["host-a"])

    run = wait_for_run(raise_for("db-b").pk)

    assert run.status == RunStatus.ROLLED_BACK, run.status_reason
    snap = Snapshot.objects.get(run=run)
    assert snap.host == "host-b" and snap.restored_at is not None
    backup = Path(snap.path) / next(iter(snap.manifest["files"]))
    assert content_sha256(orders["host-b"]) == content_sha256(backup)
    rollback = ActionAttempt.objects.get(run=run, phase="rollback")
    assert rollback.status == "succeeded"
    assert file_digest(orders["host-a"]) == a_before


def test_with_bs_agent_stopped_the_run_waits_with_the_reason_and_completes_when_it_is_back(
    celery_worker, hosts, orders
):
    make_playbook("wal", "database_wal_bloat", checkpoint_steps())
    hosts["host-b"].stop()

    incident = raise_for("db-b")
    held = wait_for_run(incident.pk, statuses=(RunStatus.BLOCKED_ON_HOST,), timeout=10)

    assert held.status_reason == "no live agent for host host-b"
    assert held.held_status == RunStatus.APPROVED
    assert not ActionAttempt.objects.filter(run=held).exists()

    hosts["host-b"].start()
    run = wait_for_run(incident.pk)

    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert HealRun.objects.get(pk=run.pk).held_status == ""
    assert wal_bytes(orders["host-b"]) <= 1024 * 1024


def test_agents_are_listed_with_their_host_queues_and_last_report(celery_worker, hosts, api_client, admin_user):
    api_client.force_authenticate(admin_user)

    listed = api_client.get("/api/agents/").json()["results"]

    by_host = {agent["host"]: agent for agent in listed}
    assert {"host-a", "host-b"} <= set(by_host)
    assert by_host["host-b"]["queues"] == ["heal.local.host-b"]
    assert by_host["host-b"]["live"] is True
    assert by_host["host-b"]["var_dir"] == str(hosts["host-b"].var)


def test_a_worker_given_the_shared_queues_also_consumes_its_hosts_queue(tmp_path):
    """A full worker (`-Q heal.local,heal.cloud,...`, as `make run` and the README's host app-1 start it) is
    its host's agent too: the stages for that host's resources reach it."""
    host = Host("host-c", tmp_path)
    host.start(queues=ALL_QUEUES)
    try:
        agent = Agent.objects.get(name=host.worker_name)
        assert "heal.local.host-c" in agent.queues
        db = host.managed / "orders.sqlite3"
        keeper = bloated_wal_db(db, rows=400)
        inventory.resource("orders", "sqlite", db, name="db", host="host-c")
        DiagnosisRule.objects.create(name="t: wal", code="database_wal_bloat", position=1, title_regex=r"(?i)\bWAL\b")
        make_playbook("wal", "database_wal_bloat", checkpoint_steps())

        run = wait_for_run(raise_for("db").pk, timeout=30)

        assert run.status == RunStatus.SUCCEEDED, run.status_reason
        assert Snapshot.objects.get(run=run).host == "host-c"
        keeper.close()
    finally:
        host.stop()
