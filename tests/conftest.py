import os

import pytest
import redis
from django.conf import settings

from tests.support import audit as audit_lock
from tests.support.processes import ALL_QUEUES, start_worker

# The shared queues and this machine's host queue (every worker also consumes heal.local.<GRACE_HOST>).
QUEUES = [*ALL_QUEUES.split(","), f"heal.local.{settings.GRACE_HOST}"]

if not os.environ.get("REDIS_URL"):
    raise pytest.UsageError(
        "REDIS_URL is not set: run the suite with `make test`, which starts its own redis-server "
        "and PostgreSQL, or point REDIS_URL at a Redis you can flush."
    )


# Names the audit log's own tests write (the registry refuses any name it does not know).
TEST_AUDIT_ACTIONS = (
    "test.after",
    "test.api",
    "test.batch",
    "test.before",
    "test.browse",
    "test.concurrent",
    "test.early",
    "test.event",
    "test.late",
    "test.later",
    "test.more",
    "test.open",
    "test.process",
    "test.quick",
    "test.user",
    "test.visible",
    "test.waiting",
)


@pytest.fixture(autouse=True, scope="session")
def _test_audit_actions():
    from approvals import audit_actions

    audit_actions.ACTIONS.update({name: "written by the audit log's own tests" for name in TEST_AUDIT_ACTIONS})
    yield


@pytest.fixture(autouse=True)
def _audit_append_only(request):
    """Every database test starts with the audit log's append-only triggers armed.

    Transactional tests unlock it just before pytest-django empties the tables.
    """
    marker = request.node.get_closest_marker("django_db")
    names = set(request.fixturenames)
    if marker is None and not names & {"db", "transactional_db", "live_server"}:
        yield
        return
    transactional = bool(
        names & {"transactional_db", "live_server"} or (marker is not None and marker.kwargs.get("transaction"))
    )
    request.getfixturevalue("transactional_db" if transactional else "db")
    if transactional:
        request.addfinalizer(audit_lock.unlock)
    audit_lock.lock()
    yield


@pytest.fixture
def published():
    """(task name, args, queue) of every task this process publishes to the broker during the test."""
    from celery.signals import after_task_publish

    sent: list[tuple[str, list, str]] = []

    def record(sender=None, body=None, routing_key=None, **_):
        sent.append((sender, list(body[0]), routing_key))

    after_task_publish.connect(record, weak=False)
    yield sent
    after_task_publish.disconnect(record)


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


def purge_queues() -> None:
    """Empty GRACE's queues on the broker: what one test published never runs in another. The keys that
    say a coalesced hand-off is on its way (incidents.intake's wake-ups) go with the messages they stand for."""
    from grace_site.celery import app

    with app.connection_for_write() as conn:
        for queue in QUEUES:
            conn.default_channel.queue_purge(queue)
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        stale = list(client.scan_iter("grace:intake:wake:*"))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _broker_isolation():
    """Tasks a test publishes run only on the worker it asked for (``celery_worker``), never on
    the session's worker after the test ended: its queues are emptied after every test."""
    yield
    purge_queues()


class WorkerPool:
    """The session's real Celery worker process; a test may kill it (SIGKILL) and start a new one.

    It consumes GRACE's queues only while a test holds the ``celery_worker`` fixture: tests that
    publish tasks without asking for a worker see them stay queued (and purged afterwards) instead
    of running, concurrently with the test or its database teardown.
    """

    def __init__(self, tmp_dir):
        self.tmp_dir = tmp_dir
        self.worker = None
        self.name = ""
        self.consuming = False

    def ensure(self) -> str:
        """A live worker consuming every queue (started if there is none)."""
        if self.worker is None or self.worker.proc.poll() is not None:
            self.worker, self.name = start_worker(self.tmp_dir)
            self.consuming = True
        elif not self.consuming:
            self._control("add_consumer")
            self.consuming = True
        return self.name

    def pause(self) -> None:
        """Stop consuming, then wait for what the worker already took to finish."""
        if self.worker is None or self.worker.proc.poll() is not None:
            return
        self.drain()
        if self.consuming:
            self._control("cancel_consumer")
            self.consuming = False
        self.drain()

    def _control(self, command: str) -> None:
        from grace_site.celery import app

        for queue in QUEUES:
            replies = getattr(app.control, command)(queue, destination=[self.name], reply=True, timeout=10)
            if not replies:
                raise RuntimeError(f"worker {self.name} did not answer {command} {queue}")

    def kill_hard(self) -> None:
        """SIGKILL the worker and its prefork children: nothing is acknowledged or cleaned up."""
        import signal

        if self.worker is not None:
            self.worker.kill(signal.SIGKILL)
            self.worker.proc.wait(10)
            self.worker.stop()
            self.worker = None

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the worker has nothing running or reserved, so a test's teardown does not
        empty the database under a task that is still finishing (an outcome being recorded...)."""
        import time

        from grace_site.celery import app

        if self.worker is None or self.worker.proc.poll() is not None:
            return
        deadline = time.monotonic() + timeout
        inspect = app.control.inspect([self.name], timeout=1.0)
        while time.monotonic() < deadline:
            active, reserved = inspect.active() or {}, inspect.reserved() or {}
            if not any(active.values()) and not any(reserved.values()):
                return
            time.sleep(0.05)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.consuming = False


@pytest.fixture(scope="session")
def worker_pool(django_db_setup, django_db_blocker, tmp_path_factory):
    pool = WorkerPool(tmp_path_factory.mktemp("worker"))
    yield pool
    pool.stop()


@pytest.fixture
def celery_worker(worker_pool, django_db_blocker):
    """A real Celery worker process consuming every queue, on the test database (shared by the session)."""
    with django_db_blocker.unblock():
        name = worker_pool.ensure()
    yield name
    worker_pool.pause()


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123456")


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()
