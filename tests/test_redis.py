"""One Redis client factory for every module (redis:// and unix://), and every key GRACE writes expires."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from limits import parse
from limits.strategies import MovingWindowRateLimiter

from approvals import policy
from approvals.models import PolicyRule
from grace_site import redis as grace_redis
from grace_site.scheduler import GraceScheduler
from learning import checks
from remediation import cloud_status, resilience
from remediation.actions import load_all
from tests.support.runs import wait_for

ROOT = Path(__file__).resolve().parent.parent
PROBE = load_all().get("http.probe")
# Keys of the broker and result backend (queues, bindings, unacked messages): Celery's own, not GRACE's.
CELERY_KEYS = ("_kombu", "unacked", "celery", "heal.", "sweeps", "benchmarks", "default", "_celery")


@pytest.fixture(scope="module")
def unix_redis(tmp_path_factory):
    """A redis-server listening on a Unix socket only."""
    directory = tmp_path_factory.mktemp("redis-unix")
    sock = directory / "redis.sock"
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(sock.exists, timeout=10, what="redis-server to open its socket")
        yield f"unix://{sock}?db=2"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=["redis", "unix"])
def redis_url(request, unix_redis):
    return settings.REDIS_URL if request.param == "redis" else unix_redis


def test_the_client_and_the_rate_limit_store_reach_the_same_database(redis_url):
    client = grace_redis.client(redis_url)
    client.delete("LIMITS/grace-test/a")
    limiter = MovingWindowRateLimiter(grace_redis.rate_limit_storage(redis_url))

    assert client.ping()
    assert limiter.hit(parse("2/minute"), "grace-test", "a")
    assert limiter.hit(parse("2/minute"), "grace-test", "a")
    assert not limiter.hit(parse("2/minute"), "grace-test", "a")
    # The limit's key is in the database the URL names, with its window as TTL.
    keys = [k for k in client.scan_iter("LIMITS*") if b"grace-test" in k]
    assert keys and all(0 < client.ttl(k) <= 60 for k in keys)


def test_a_unix_socket_url_names_the_database_for_every_client(unix_redis):
    grace_redis.client(unix_redis).set("grace:test:db", "two", ex=60)

    other_db = unix_redis.replace("db=2", "db=0")
    assert grace_redis.client(unix_redis).get("grace:test:db") == b"two"
    assert grace_redis.client(other_db).get("grace:test:db") is None


def test_celery_reaches_a_unix_socket_redis_url(unix_redis):
    # Settings are read once per process: a fresh one, configured as a deployment would be.
    script = (
        "import django; django.setup()\n"
        "from grace_site.celery import app\n"
        "with app.connection_for_write() as conn:\n"
        "    conn.ensure_connection(max_retries=1)\n"
        "    queue = conn.SimpleQueue('grace-test-unix')\n"
        "    queue.put({'hello': 'socket'})\n"
        "    print(queue.get(timeout=5).payload)\n"
        "app.backend.set('grace-test-key', b'stored')\n"
        "print(app.backend.get('grace-test-key'))\n"
    )
    env = {**os.environ, "REDIS_URL": unix_redis, "DJANGO_SETTINGS_MODULE": "grace_site.settings"}

    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["{'hello':", "'socket'}", "b'stored'"]
    assert grace_redis.client(unix_redis).exists("grace-test-key")


def _grace_keys(client) -> list[bytes]:
    return [key for key in client.scan_iter(count=1000) if not key.decode().startswith(CELERY_KEYS)]


def _breaker_targets(count: int) -> None:
    """``count`` distinct targets through the guarded call path; every other one fails (and opens)."""

    def fail():
        raise RuntimeError("down")

    for i in range(count):
        params = {"url": f"http://127.0.0.1:9/target-{i}"}
        try:
            resilience.run_guarded(PROBE, params, fail if i % 2 else dict)
        except RuntimeError:
            pass


@pytest.mark.django_db
def test_every_key_grace_writes_to_redis_has_a_ttl(settings, redis_client, client, admin_user):
    redis_client.flushdb()
    settings.GRACE_BREAKER_FAIL_MAX = 1
    settings.GRACE_RETRY_ATTEMPTS = 1
    # Breakers and rate limits, reset, listed.
    _breaker_targets(4)
    resilience.open_breakers()
    resilience.spent_limits()
    resilience.reset_breaker("http.probe", PROBE.target({"url": "http://127.0.0.1:9/target-1"}), actor="test")
    # Policy budgets, with a spender marker and its lock.
    PolicyRule.objects.create(name="budget", effect="limit", max_per_hour=5)
    facts = policy.PlanFacts(["http.probe"], ["local"], "staging", "web", "x", "local:web", 1, 0.9, 0.5, 0, 1)
    policy.consume_action_budget(facts, spender="run-1")
    # Anonymous throttles, the health check, beat's tick, the smoke benchmark, cloud errors.
    assert client.get("/api/incidents/").status_code in (401, 403)
    client.get("/api/health/")
    GraceScheduler._record_tick(GraceScheduler.__new__(GraceScheduler), time.time())
    checks.redis_roundtrip({})
    cloud_status.note_error("aws", "no credentials")
    # Brute-force limits: a wrong API token, a failed admin login.
    assert client.get("/api/runs/", HTTP_AUTHORIZATION="Token wrong").status_code == 401
    client.post("/admin/login/", {"username": "root", "password": "wrong"})

    keys = _grace_keys(redis_client)

    assert len(keys) > 10
    assert any(b"grace:auth" in key for key in keys) and any(b"axes" in key for key in keys)
    assert {key: redis_client.ttl(key) for key in keys if redis_client.ttl(key) < 0} == {}


def test_redis_keys_stay_bounded_as_breaker_targets_multiply(settings, redis_client):
    redis_client.flushdb()
    settings.GRACE_BREAKER_FAIL_MAX = 1
    settings.GRACE_BREAKER_RESET_TIMEOUT = 1
    # Long enough that no key expires while the targets are still being created on a slow, busy machine.
    settings.GRACE_RESILIENCE_STATE_TTL = 10
    settings.GRACE_RETRY_ATTEMPTS = 1
    settings.GRACE_RATE_LIMIT = "100 per 10 seconds"
    settings.GRACE_RATE_LIMITS = {}

    _breaker_targets(600)

    grown = _grace_keys(redis_client)
    assert len(grown) >= 1200  # a breaker's state and counters, and a rate-limit window, per target
    assert {key: redis_client.ttl(key) for key in grown if redis_client.ttl(key) == -1} == {}  # none without one
    assert len(resilience.open_breakers()) == 300
    # Once the targets fall idle their state goes, index included: nothing is left per target.
    wait_for(lambda: not _grace_keys(redis_client), timeout=40, interval=0.2, what="the breaker keys to expire")
    assert resilience.open_breakers() == []
