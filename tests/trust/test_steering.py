"""An alert can only select among its service's inventory resources: every attempt to steer a local action at
something else executes nothing and leaves the other thing as it was (real worker, real files and processes)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from incidents.models import DiagnosisRule
from incidents.services import Signal, ingest
from learning.models import PlaybookStatistics
from remediation.actions.local_playbooks import PLAYBOOKS
from remediation.choices import RunStatus
from remediation.models import ActionAttempt, HealRun, Playbook
from tests.support import inventory
from tests.support.runs import bloated_wal_db, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)


def install(name: str) -> Playbook:
    (spec,) = [p for p in PLAYBOOKS if p["name"] == name]
    return Playbook.objects.create(**{**spec, "cooldown_seconds": 0})


def rule(code: str, title: str) -> None:
    DiagnosisRule.objects.get_or_create(
        name=f"test: {code}", defaults={"code": code, "position": 1, "title_regex": title, "confidence": 0.9}
    )


def tree_digest(path: Path) -> str:
    """Every file under ``path`` (names, bytes, modes), or the file itself with its -wal and -shm."""
    digest = hashlib.sha256()
    paths = sorted(path.rglob("*")) if path.is_dir() else [Path(f"{path}{s}") for s in ("", "-wal", "-shm")]
    for item in paths:
        if item.is_file():
            digest.update(str(item).encode() + item.read_bytes() + oct(item.stat().st_mode).encode())
    return digest.hexdigest()


def raise_incident(service: str, title: str, labels: dict):
    return ingest(Signal(source="api", title=title, service=service, labels=labels)).incident


def assert_escalated_without_acting(run: HealRun, *phrases: str) -> None:
    assert run.status == RunStatus.ESCALATED, (run.status, run.status_reason)
    for phrase in phrases:
        assert phrase in run.status_reason
    assert not ActionAttempt.objects.filter(run=run).exists()


def test_a_wal_alert_cannot_point_the_checkpoint_outside_its_service(celery_worker, allowed_root):
    rule("database_wal_bloat", r"(?i)\bWAL\b")
    install("sqlite-wal-checkpoint")
    mine_a, mine_b = allowed_root / "orders-a.sqlite3", allowed_root / "orders-b.sqlite3"
    theirs, loose = allowed_root / "billing.sqlite3", allowed_root / "loose.sqlite3"
    keepers = [bloated_wal_db(path, rows=300) for path in (mine_a, mine_b, theirs, loose)]
    inventory.resource("orders", "sqlite", mine_a, name="primary")
    inventory.resource("orders", "sqlite", mine_b, name="replica")
    inventory.resource("billing", "sqlite", theirs, name="ledger")
    before = {path: tree_digest(path) for path in (mine_a, mine_b, theirs, loose)}
    attempts = [
        {"resource": "ledger"},  # another service's resource, by its name
        {"resource": str(theirs)},  # another service's file, by path
        {"resource": str(loose)},  # a file in no inventory at all
        {"resource": f"{allowed_root}//./orders-a.sqlite3"},  # one of its own files, spelled another way
        {"resource": "PRIMARY"},  # not its name either
        {"db_path": str(theirs)},  # the labels playbooks used to read: ignored, so the choice stays ambiguous
    ]

    runs = [wait_for_run(raise_incident("orders", f"WAL {i}", labels).pk) for i, labels in enumerate(attempts)]

    for run, labels in zip(runs, attempts, strict=True):
        assert_escalated_without_acting(run, "sqlite")
        assert ("names no sqlite resource of service orders" in run.status_reason) == ("resource" in labels)
    assert {path: tree_digest(path) for path in before} == before
    for keeper in keepers:
        keeper.close()


def test_the_same_file_under_another_name_is_the_same_target(celery_worker, allowed_root):
    """Cooldowns (and breakers, budgets, snapshots, learning) key on the real path: a symlink changes nothing."""
    rule("database_wal_bloat", r"(?i)\bWAL\b")
    playbook = install("sqlite-wal-checkpoint")
    Playbook.objects.filter(pk=playbook.pk).update(cooldown_seconds=3600)
    db = allowed_root / "shared.sqlite3"
    keeper = bloated_wal_db(db, rows=300)
    alias = allowed_root / "alias.sqlite3"
    alias.symlink_to(db)
    inventory.resource("orders", "sqlite", db)
    inventory.resource("reports", "sqlite", alias)

    first = wait_for_run(raise_incident("orders", "orders WAL", {}).pk)
    bloated_wal_db(db, rows=300).close()
    second = wait_for_run(raise_incident("reports", "reports WAL", {}).pk)

    assert first.status == RunStatus.SUCCEEDED, first.status_reason
    assert first.target == f"local:{db}"
    assert second.status == RunStatus.BLOCKED and "cooldown" in second.status_reason
    assert f"on local:{db}" in second.status_reason
    assert not ActionAttempt.objects.filter(run=second).exists()
    keeper.close()


def test_a_cache_alert_cannot_empty_anything_but_the_services_declared_cache(celery_worker, allowed_root):
    rule("cache_corruption", r"(?i)cache corrupt")
    install("clear-corrupt-cache")
    app = allowed_root / "app"
    cache, config = app / "cache", app / "config"
    for directory in (cache, config):
        directory.mkdir(parents=True)
        (directory / "data.bin").write_bytes(os.urandom(256))
    (app / "app.pid").write_text("4242")
    (app / "app.sqlite3").write_bytes(b"SQLite format 3\x00" + os.urandom(64))
    inventory.resource("web", "cache", cache, name="cache")
    other = inventory.resource("web", "cache", allowed_root / "other-cache", name="other")
    Path(other.target).mkdir()
    protected = tree_digest(config), (app / "app.pid").read_bytes(), (app / "app.sqlite3").read_bytes()
    attempts = [{"resource": str(config)}, {"resource": str(app)}, {"cache_dir": str(config)}, {"resource": ".."}]

    runs = [wait_for_run(raise_incident("web", f"cache corrupt {i}", labels).pk) for i, labels in enumerate(attempts)]

    for run in runs:
        assert_escalated_without_acting(run, "cache")
    assert (tree_digest(config), (app / "app.pid").read_bytes(), (app / "app.sqlite3").read_bytes()) == protected
    assert (cache / "data.bin").exists()

    chosen = wait_for_run(raise_incident("web", "cache corrupt again", {"resource": "cache"}).pk)

    assert chosen.status == RunStatus.SUCCEEDED, chosen.status_reason
    assert not any(cache.iterdir()) and tree_digest(config) == protected[0]


@pytest.fixture
def two_services(allowed_root):
    """Two allow-listed services with real processes; only 'web' is an inventory resource of service web."""
    path = Path(settings.GRACE_SERVICES_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    procs, config = {}, {}
    for name in ("web-svc", "db-svc"):
        pidfile = allowed_root / f"{name}.pid"
        argv = [sys.executable, "-c", "import time; time.sleep(600)", name]
        procs[name] = subprocess.Popen(argv, start_new_session=True)
        pidfile.write_text(str(procs[name].pid))
        config[name] = {
            "kind": "pidfile",
            "argv": argv,
            "pidfile": str(pidfile),
            "restart": "spawn",
            "stop_timeout": 5,
            "start_timeout": 20,
        }
    path.write_text(json.dumps(config))
    inventory.resource("web", "service", "web-svc", name="process")
    inventory.resource("db", "service", "db-svc", name="process")
    yield procs
    path.unlink(missing_ok=True)
    for name in config:
        pid = int((allowed_root / f"{name}.pid").read_text())
        for pid_ in {pid, procs[name].pid}:
            try:
                psutil.Process(pid_).kill()
            except psutil.NoSuchProcess:
                pass


def test_a_restart_alert_cannot_restart_another_services_process(celery_worker, two_services):
    rule("service_down", r"(?i)is down")
    install("restart-down-service")
    db_pid = two_services["db-svc"].pid

    runs = [
        wait_for_run(raise_incident("web", f"web is down {i}", labels).pk)
        for i, labels in enumerate([{"resource": "db-svc"}, {"resource": "process", "service_name": "db-svc"}])
    ]

    assert_escalated_without_acting(runs[0], "names no service resource of service web")
    assert runs[1].status == RunStatus.SUCCEEDED, runs[1].status_reason  # its own process, whatever else it says
    assert runs[1].plan["steps"][0]["params"]["service"] == "web-svc"
    assert psutil.pid_exists(db_pid) and psutil.Process(db_pid).is_running()
    unknown = wait_for_run(raise_incident("db-svc", "db-svc is down", {}).pk)
    assert_escalated_without_acting(unknown, "service 'db-svc' is not in the inventory")
    assert psutil.Process(db_pid).is_running()


def test_refused_parameters_never_count_against_the_playbook(celery_worker, allowed_root, settings):
    """Ten incidents whose bound resource the action refuses (outside the allowed roots) end BLOCKED: the
    playbook stays enabled and its statistics are untouched."""
    rule("database_wal_bloat", r"(?i)\bWAL\b")
    playbook = install("sqlite-wal-checkpoint")
    outside = Path(settings.VAR_DIR) / "outside-roots"
    outside.mkdir(exist_ok=True)
    for i in range(10):
        db = outside / f"db{i}.sqlite3"
        bloated_wal_db(db, rows=10).close()
        inventory.resource(f"svc-{i}", "sqlite", db)
    before = tree_digest(outside)

    runs = [wait_for_run(raise_incident(f"svc-{i}", f"WAL {i}", {}).pk) for i in range(10)]

    assert {run.status for run in runs} == {RunStatus.BLOCKED}, [r.status_reason for r in runs]
    assert all("outside the allowed roots" in run.status_reason for run in runs)
    playbook.refresh_from_db()
    assert playbook.enabled and not playbook.paused_reason
    assert not PlaybookStatistics.objects.filter(playbook=playbook.name, attempts__gt=0).exists()
    assert tree_digest(outside) == before
