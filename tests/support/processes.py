"""Real GRACE processes (Celery worker, beat) started for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.db import connection

from grace_site import serve
from grace_site.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]
ALL_QUEUES = "heal.local,heal.cloud,sweeps,benchmarks,default,intake"


def database_url() -> str:
    """The URL of the database the tests are using right now (the test database)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return "sqlite:///" + str(Path(s["NAME"]).resolve())
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


# PostgreSQL targets of the local actions, read per call: a test writes this file, workers see it.
PG_TARGETS_FILE = Path(os.environ.get("GRACE_VAR_DIR", "/tmp")) / "test-postgres-targets.json"


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url()
    env.setdefault("GRACE_POSTGRES_TARGETS", str(PG_TARGETS_FILE))
    env.update(extra)
    return env


class Managed:
    """A child process in its own process group, stopped with its children."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
        else:
            self.kill(signal.SIGKILL)  # stray children of a dead parent
        self._log.close()


def start_worker(
    tmp_dir: Path, *, queues: str = ALL_QUEUES, concurrency: int = 2, broker_url: str | None = None, **env: str
) -> tuple[Managed, str]:
    """A worker on the test database; ``broker_url`` puts it (and the start-up ping) on another Redis."""
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    if broker_url:
        env["REDIS_URL"] = broker_url
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "grace_site",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-n",
        name,
        "--without-mingle",
        "--without-gossip",
        "-l",
        "info",
    ]
    worker = Managed(argv, process_env(**env), tmp_dir / f"{name}.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"Celery worker exited during start-up:\n{worker.log()}")
        if broker_url:  # the control mailbox publishes on the default broker: wait for its agent's report
            from remediation.models import Agent

            connection.close_if_unusable_or_obsolete()
            if Agent.objects.filter(name=name, stopped_at=None).exists():
                return worker, name
            time.sleep(0.2)
        elif celery_app.control.ping(destination=[name], timeout=0.5):
            return worker, name
    worker.stop()
    raise RuntimeError(f"Celery worker did not answer a ping within 60 s:\n{worker.log()}")


def start_beat(tmp_dir: Path, **env: str) -> Managed:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "grace_site",
        "beat",
        "-l",
        "info",
        "--pidfile=",
        f"--schedule={tmp_dir / 'beat-schedule'}",
        "--max-interval",
        "1",
    ]
    return Managed(argv, process_env(**env), tmp_dir / f"beat-{uuid.uuid4().hex[:8]}.log")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: Managed, what: str, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{what} exited during start-up:\n{proc.log()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s:\n{proc.log()}")


def start_redis(tmp_dir: Path, port: int) -> Managed:
    """A throwaway redis-server on ``port`` (no persistence): stop it to have a Redis that is down."""
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_dir),
    ]
    server = Managed(argv, dict(os.environ), tmp_dir / f"redis-{port}.log")
    _wait_for_port(port, server, "redis-server")
    return server


def start_web(tmp_dir: Path, **env: str) -> tuple[Managed, str]:
    """granian serving GRACE on the test database (one worker), as `make run` does; returns it and its URL."""
    port = free_port()
    argv = serve.command(port=port, workers=1, threads=4)
    web = Managed(argv, process_env(**env), tmp_dir / f"web-{port}.log")
    _wait_for_port(port, web, "granian")
    return web, f"http://127.0.0.1:{port}"
