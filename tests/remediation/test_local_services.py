"""service.set_log_level and service.restart against real files and real processes."""

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
from rest_framework.exceptions import ValidationError

from remediation.actions import load_all
from remediation.actions.base import ActionError, ActionRefused, ActionUnavailable
from tests.support.runs import wait_for as poll_until

REGISTRY = load_all()
SET_LEVEL = REGISTRY.get("service.set_log_level")
RESTART = REGISTRY.get("service.restart")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# A supervisor as a real deployment has one: it starts the command, writes its pidfile and restarts it on exit.
SUPERVISOR = """
import subprocess, sys, os
argv, pidfile = sys.argv[2:], sys.argv[1]
while True:
    child = subprocess.Popen(argv)
    with open(pidfile + ".tmp", "w") as fh:
        fh.write(str(child.pid))
    os.replace(pidfile + ".tmp", pidfile)
    child.wait()
"""


@pytest.fixture
def managed(settings, tmp_path):
    root = tmp_path / "managed"
    root.mkdir()
    settings.GRACE_ALLOWED_ROOTS = [str(root)]
    return root


@pytest.fixture
def configure(settings, managed):
    path = managed.parent / "services.json"
    settings.GRACE_SERVICES_FILE = path

    def write(services: dict) -> None:
        path.write_text(json.dumps(services))

    return write


@pytest.fixture
def cleanup():
    """Processes a test started (directly or through GRACE) are killed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def poll(check, timeout: float = 20.0):
    return poll_until(check, timeout=timeout, interval=0.01)


# --- log level -------------------------------------------------------------------

CONFIG = (
    b"# orders api\r\n[logging]\r\nlevel = WARNING   \r\nformat = %(message)s\r\n\xe9t\xe9 = latin-1 bytes stay\r\n"
)


@pytest.fixture
def config(managed, configure):
    path = managed / "orders" / "app.ini"
    path.parent.mkdir()
    path.write_bytes(CONFIG)
    os.chmod(path, 0o640)
    configure(
        {
            "orders-api": {
                "kind": "pidfile",
                "argv": SLEEPER,
                "pidfile": str(managed / "orders" / "app.pid"),
                "config_path": str(path),
                "log_level_pattern": r"^level\s*=\s*(\w+)",
            }
        }
    )
    return path


def test_it_sets_the_log_level_in_the_config_file(config):
    result = SET_LEVEL.execute(SET_LEVEL.validate({"service": "orders-api", "level": "DEBUG"}))

    assert result == {"changed": True, "previous": "WARNING", "log_level": "DEBUG"}
    assert config.read_bytes() == CONFIG.replace(b"level = WARNING", b"level = DEBUG")
    assert os.stat(config).st_mode & 0o777 == 0o640
    assert SET_LEVEL.observe({"service": "orders-api"})["log_level"] == "DEBUG"
    assert [p.name for p in config.parent.iterdir()] == ["app.ini"]  # no temporary file left behind


def test_setting_the_same_level_again_changes_nothing(config):
    SET_LEVEL.execute({"service": "orders-api", "level": "DEBUG"})
    mtime = os.stat(config).st_mtime_ns

    result = SET_LEVEL.execute({"service": "orders-api", "level": "DEBUG"})

    assert result == {"changed": False, "log_level": "DEBUG"}
    assert os.stat(config).st_mtime_ns == mtime


def test_rollback_restores_the_config_file_byte_for_byte(config, tmp_path):
    params = SET_LEVEL.validate({"service": "orders-api", "level": "DEBUG"})
    snapshot_dir = tmp_path / "snap"
    snapshot_dir.mkdir()

    state = SET_LEVEL.snapshot(params, snapshot_dir)
    SET_LEVEL.execute(params)
    result = SET_LEVEL.rollback(params, state, snapshot_dir)

    assert state["log_level"] == "WARNING"
    assert config.read_bytes() == CONFIG
    assert result["log_level"] == "WARNING"


def test_a_level_that_is_not_a_word_is_a_field_error(config):
    with pytest.raises(ValidationError) as exc:
        SET_LEVEL.validate({"service": "orders-api", "level": "DEBUG\nrm = -rf"})

    assert "level" in exc.value.detail


def test_a_config_file_outside_the_allowed_roots_is_refused(managed, configure, tmp_path):
    outside = tmp_path / "etc-app.ini"
    outside.write_bytes(CONFIG)
    link = managed / "app.ini"
    link.symlink_to(outside)
    for path in (outside, link):
        configure(
            {
                "x": {
                    "kind": "pidfile",
                    "argv": SLEEPER,
                    "pidfile": str(managed / "x.pid"),
                    "config_path": str(path),
                    "log_level_pattern": r"^level\s*=\s*(\w+)",
                }
            }
        )

        with pytest.raises(ActionRefused, match="outside the allowed roots"):
            SET_LEVEL.execute({"service": "x", "level": "DEBUG"})

    assert outside.read_bytes() == CONFIG


def test_services_missing_from_the_allow_list_are_refused(configure, managed):
    with pytest.raises(ActionRefused, match="not in the allow-list"):
        RESTART.execute({"service": "orders-api"})  # no services file at all

    configure({"other": {"kind": "systemd", "unit": "other.service"}})
    with pytest.raises(ActionRefused, match="not in the allow-list"):
        RESTART.execute({"service": "orders-api"})


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"kind": "shell", "argv": ["x"]}, "'kind' must be"),
        ({"kind": "systemd", "unit": "--force"}, "valid 'unit'"),
        ({"kind": "pidfile", "argv": "python app.py", "pidfile": "/x.pid"}, "non-empty list of strings"),
        (
            {"kind": "pidfile", "argv": ["a"], "pidfile": "/x.pid", "log_level_pattern": "level=\\w+"},
            "exactly one group",
        ),
        ({"kind": "pidfile", "argv": ["a"], "pidfile": "/x.pid", "shell": True}, "unknown keys"),
    ],
)
def test_a_bad_services_file_makes_the_family_unavailable_naming_the_problem(configure, entry, message):
    configure({"svc": entry})

    with pytest.raises(ActionUnavailable, match=message):
        RESTART.observe({"service": "svc"})


# --- restart ---------------------------------------------------------------------------


def test_restart_starts_a_down_service_itself_and_replaces_a_running_one(managed, configure, cleanup):
    pidfile = managed / "worker.pid"
    configure({"worker": {"kind": "pidfile", "argv": SLEEPER, "pidfile": str(pidfile), "restart": "spawn"}})
    assert RESTART.observe({"service": "worker"})["running"] is False

    first = RESTART.execute(RESTART.validate({"service": "worker"}))
    cleanup.append(first["pid"])
    assert first["previous_pid"] is None
    assert RESTART.observe({"service": "worker"})["pid"] == first["pid"]

    second = RESTART.execute({"service": "worker"})
    cleanup.append(second["pid"])

    assert second["previous_pid"] == first["pid"]
    assert second["pid"] != first["pid"]
    assert not psutil.pid_exists(first["pid"]) or psutil.Process(first["pid"]).status() == psutil.STATUS_ZOMBIE
    facts = RESTART.observe({"service": "worker"})
    assert facts["running"] is True
    assert facts["pid"] == second["pid"] == int(pidfile.read_text())
    assert facts["started_at"] is not None


def test_a_spawned_service_gets_its_configured_environment_not_graces(managed, configure, cleanup, monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "x" * 40)
    pidfile = managed / "env.pid"
    configure(
        {
            "env": {
                "kind": "pidfile",
                "argv": SLEEPER,
                "pidfile": str(pidfile),
                "restart": "spawn",
                "env": {"ORDERS_MODE": "primary"},
            }
        }
    )

    result = RESTART.execute({"service": "env"})
    cleanup.append(result["pid"])

    environ = psutil.Process(result["pid"]).environ()
    assert environ["ORDERS_MODE"] == "primary"
    assert "DJANGO_SECRET_KEY" not in environ
    assert "REDIS_URL" not in environ


def test_restart_of_a_supervised_service_waits_for_the_supervisor_to_bring_a_new_process(managed, configure, cleanup):
    pidfile = managed / "api.pid"
    configure({"api": {"kind": "pidfile", "argv": SLEEPER, "pidfile": str(pidfile), "restart": "supervisor"}})
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(pidfile), *SLEEPER], start_new_session=True)
    cleanup.append(supervisor.pid)
    try:
        old = poll(lambda: RESTART.observe({"service": "api"})["pid"])

        result = RESTART.execute({"service": "api"})

        assert result["previous_pid"] == old
        assert result["pid"] != old
        assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
        assert psutil.Process(result["pid"]).ppid() == supervisor.pid
    finally:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait(10)


def test_a_stale_pidfile_naming_another_process_never_gets_it_signalled(managed, configure, cleanup):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # bystander"])
    cleanup.append(bystander.pid)
    pidfile = managed / "worker.pid"
    pidfile.write_text(str(bystander.pid))
    configure({"worker": {"kind": "pidfile", "argv": SLEEPER, "pidfile": str(pidfile), "restart": "spawn"}})

    assert RESTART.observe({"service": "worker"})["running"] is False
    result = RESTART.execute({"service": "worker"})
    cleanup.append(result["pid"])

    assert result["previous_pid"] is None
    assert bystander.poll() is None  # still alive, never signalled
    assert result["pid"] != bystander.pid
    bystander.kill()
    bystander.wait(10)


# --- systemd ---------------------------------------------------------------------------
# No systemd runs here: systemctl is the edge of the world, doubled by a stand-in on PATH that
# records its argv and answers like systemctl for a unit whose main process is a real sleeper.

FAKE_SYSTEMCTL = """#!/bin/sh
printf '%s\\n' "$*" >> "$SYSTEMCTL_LOG"
case "$1" in
  show) printf 'ActiveState=active\\nMainPID=%s\\n' "$SYSTEMCTL_PID" ;;
  restart) exit "${SYSTEMCTL_RESTART_RC:-0}" ;;
esac
"""


@pytest.fixture
def systemctl(tmp_path, monkeypatch, cleanup):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bindir / "systemctl").chmod(0o755)
    sleeper = subprocess.Popen(SLEEPER)
    cleanup.append(sleeper.pid)
    log = tmp_path / "systemctl.log"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("SYSTEMCTL_LOG", str(log))
    monkeypatch.setenv("SYSTEMCTL_PID", str(sleeper.pid))
    yield log, sleeper.pid
    sleeper.kill()
    sleeper.wait(10)


def test_a_systemd_unit_is_restarted_with_an_argv_naming_only_the_unit(configure, systemctl):
    log, pid = systemctl
    configure({"nginx": {"kind": "systemd", "unit": "nginx.service"}})

    result = RESTART.execute({"service": "nginx"})

    assert log.read_text().splitlines()[0] == "restart -- nginx.service"
    assert result["restarted"] == "nginx.service"
    assert result["running"] is True
    assert result["pid"] == pid
    assert RESTART.observe({"service": "nginx"})["started_at"] is not None


def test_a_failed_systemd_restart_is_an_error(configure, systemctl, monkeypatch):
    monkeypatch.setenv("SYSTEMCTL_RESTART_RC", "1")
    configure({"nginx": {"kind": "systemd", "unit": "nginx.service"}})

    with pytest.raises(ActionError, match="restart of nginx.service failed"):
        RESTART.execute({"service": "nginx"})
