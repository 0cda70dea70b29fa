"""Retries, circuit breakers and rate limits around action calls, with their state in the real Redis."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from rest_framework import serializers

from approvals.models import AuditEvent
from remediation import resilience
from remediation.actions import load_all
from remediation.actions.base import Action, ActionError, ActionRefused, TransientActionError
from remediation.resilience import Blocked, open_breakers, reset_breaker, run_guarded, spent_limits


class TargetParams(serializers.Serializer):
    target = serializers.CharField()


def make_action() -> Action:
    """An action of its own per test, so breaker and limit state never leaks between tests."""
    return Action(
        name=f"test.flaky-{uuid.uuid4().hex[:8]}",
        family="test",
        params=TargetParams,
        observe=lambda params: {},
        execute=lambda params: {},
        target_param="target",
    )


class Calls:
    """A callable that raises the given errors in order, then returns ``{"ok": True}``."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.count = 0

    def __call__(self) -> dict:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"ok": True}


@pytest.fixture(autouse=True)
def fast(settings):
    settings.GRACE_RETRY_ATTEMPTS = 3
    settings.GRACE_RETRY_MAX_SECONDS = 10
    settings.GRACE_RETRY_WAIT_INITIAL = 0.001
    settings.GRACE_RETRY_WAIT_MAX = 0.01
    settings.GRACE_BREAKER_FAIL_MAX = 3
    settings.GRACE_BREAKER_RESET_TIMEOUT = 300
    settings.GRACE_RATE_LIMIT = "1000/hour"
    settings.GRACE_RATE_LIMITS = {}


PARAMS = {"target": "orders-db"}


def test_transient_errors_are_retried_until_the_call_succeeds():
    fn = Calls(TransientActionError("reset by peer"), TransientActionError("timeout"))

    result = run_guarded(make_action(), PARAMS, fn)

    assert result == {"ok": True}
    assert fn.count == 3


def test_permanent_errors_are_not_retried():
    fn = Calls(ActionError("no such table"))

    with pytest.raises(ActionError, match="no such table"):
        run_guarded(make_action(), PARAMS, fn)

    assert fn.count == 1


def test_retries_are_bounded_and_the_last_transient_error_is_raised():
    fn = Calls(*(TransientActionError(f"try {i}") for i in range(10)))

    with pytest.raises(TransientActionError, match="try 2"):
        run_guarded(make_action(), PARAMS, fn)

    assert fn.count == 3


@pytest.mark.django_db
def test_the_breaker_opens_after_consecutive_failures_and_blocks_without_calling(settings):
    action = make_action()
    for _ in range(3):
        with pytest.raises(ActionError):
            run_guarded(action, PARAMS, Calls(ActionError("boom")))
    fn = Calls()

    with pytest.raises(Blocked) as exc:
        run_guarded(action, PARAMS, fn)

    assert fn.count == 0
    assert exc.value.kind == "breaker"
    assert "3 consecutive failures" in exc.value.reason
    assert exc.value.reset_at > datetime.now(UTC)
    opened = AuditEvent.objects.get(action="resilience.breaker_opened", data__action=action.name)
    assert opened.data["target"] == "test:orders-db"
    assert opened.data["failures"] == 3


@pytest.mark.django_db
def test_a_success_resets_the_consecutive_failure_count():
    action = make_action()
    for fn in (Calls(ActionError("1")), Calls(ActionError("2")), Calls(), Calls(ActionError("3"))):
        try:
            run_guarded(action, PARAMS, fn)
        except ActionError:
            pass

    assert run_guarded(action, PARAMS, Calls()) == {"ok": True}


def test_refused_calls_never_open_the_breaker():
    action = make_action()
    for _ in range(5):
        with pytest.raises(ActionRefused):
            run_guarded(action, PARAMS, Calls(ActionRefused("outside the allowed roots")))

    assert run_guarded(action, PARAMS, Calls()) == {"ok": True}


@pytest.mark.django_db
def test_breakers_are_per_action_and_target():
    action = make_action()
    for _ in range(3):
        with pytest.raises(ActionError):
            run_guarded(action, PARAMS, Calls(ActionError("boom")))

    assert run_guarded(action, {"target": "other-db"}, Calls()) == {"ok": True}
    assert run_guarded(make_action(), PARAMS, Calls()) == {"ok": True}


@pytest.mark.django_db
def test_an_open_breaker_is_seen_by_another_process_and_another_client(settings):
    action = make_action()
    for _ in range(3):
        with pytest.raises(ActionError):
            run_guarded(action, PARAMS, Calls(ActionError("boom")))

    listed = [b for b in open_breakers() if b["action"] == action.name]
    assert listed == [
        {
            "action": action.name,
            "target": "test:orders-db",
            "state": "open",
            "failures": 3,
            "opened_at": listed[0]["opened_at"],
            "resets_at": listed[0]["resets_at"],
        }
    ]
    other = redis.Redis.from_url(settings.REDIS_URL)
    assert other.get(f"{resilience._namespace(action.name, 'test:orders-db')}:pybreaker:state") == b"open"

    script = (
        "import django, json, sys\n"
        "django.setup()\n"
        "from rest_framework import serializers\n"
        "from remediation.actions.base import Action\n"
        "from remediation.resilience import Blocked, run_guarded\n"
        "class P(serializers.Serializer):\n"
        "    target = serializers.CharField()\n"
        "action = Action(name=sys.argv[1], family='test', params=P, observe=dict, execute=dict,\n"
        "                target_param='target')\n"
        "called = []\n"
        "try:\n"
        "    run_guarded(action, {'target': 'orders-db'}, lambda: called.append(1) or {})\n"
        "    print(json.dumps({'blocked': False, 'called': len(called)}))\n"
        "except Blocked as exc:\n"
        "    print(json.dumps({'blocked': True, 'kind': exc.kind, 'called': len(called)}))\n"
    )
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="grace_site.settings", GRACE_BREAKER_FAIL_MAX="3")
    done = subprocess.run(
        [sys.executable, "-c", script, action.name], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"blocked": True, "kind": "breaker", "called": 0}


@pytest.mark.django_db
def test_after_the_reset_timeout_one_trial_call_goes_through_and_closes_the_breaker(settings):
    action = make_action()
    for _ in range(3):
        with pytest.raises(ActionError):
            run_guarded(action, PARAMS, Calls(ActionError("boom")))
    # Time is injected: the breaker was opened longer ago than the reset timeout.
    namespace = resilience._namespace(action.name, "test:orders-db")
    redis.Redis.from_url(settings.REDIS_URL).set(f"{namespace}:pybreaker:opened_at", int(time.time()) - 301)
    fn = Calls()

    assert run_guarded(action, PARAMS, fn) == {"ok": True}
    assert fn.count == 1
    assert [b for b in open_breakers() if b["action"] == action.name] == []


@pytest.mark.django_db
def test_reset_breaker_closes_it_and_is_audited(admin_user):
    action = make_action()
    for _ in range(3):
        with pytest.raises(ActionError):
            run_guarded(action, PARAMS, Calls(ActionError("boom")))

    assert reset_breaker(action.name, "test:orders-db", actor=admin_user) is True

    assert run_guarded(action, PARAMS, Calls()) == {"ok": True}
    event = AuditEvent.objects.get(action="resilience.breaker_reset", data__action=action.name)
    assert event.actor == "root"
    assert event.data == {
        "action": action.name,
        "target": "test:orders-db",
        "previous_state": "open",
        "failures": 3,
    }
    assert reset_breaker(action.name, "test:orders-db", actor=admin_user) is False


def test_the_rate_limit_blocks_the_call_after_the_limit_without_calling(settings):
    action = make_action()
    settings.GRACE_RATE_LIMITS = {action.name: "3/minute"}
    for _ in range(3):
        assert run_guarded(action, PARAMS, Calls()) == {"ok": True}
    fn = Calls()

    with pytest.raises(Blocked) as exc:
        run_guarded(action, PARAMS, fn)

    assert fn.count == 0
    assert exc.value.kind == "rate_limit"
    assert "3 per 1 minute" in exc.value.reason
    assert 0 < (exc.value.reset_at - datetime.now(UTC)).total_seconds() <= 61
    spent = [row for row in spent_limits() if row["action"] == action.name]
    assert spent == [
        {"action": action.name, "target": "test:orders-db", "limit": "3 per 1 minute", "resets_at": exc.value.reset_at}
    ]
    # Another target of the same action has its own budget.
    assert run_guarded(action, {"target": "other-db"}, Calls()) == {"ok": True}


def test_an_unparsable_rate_limit_names_the_setting(settings):
    settings.GRACE_RATE_LIMIT = "lots"

    with pytest.raises(ImproperlyConfigured, match="GRACE_RATE_LIMIT"):
        run_guarded(make_action(), PARAMS, Calls())


@pytest.mark.parametrize(
    "variable, value",
    [
        ("GRACE_RATE_LIMIT", "lots"),
        ("GRACE_RATE_LIMITS", "sqlite.vacuum=2/fortnight"),
        ("GRACE_RATE_LIMITS", "nolimit"),
    ],
)
def test_a_bad_rate_limit_stops_start_up_naming_the_variable(variable, value):
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="grace_site.settings", **{variable: value})

    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], capture_output=True, text=True, env=env, timeout=60
    )

    assert done.returncode != 0
    assert f"ImproperlyConfigured: {variable} " in done.stderr


def test_unreachable_resilience_state_blocks_the_call_fail_closed(settings):
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    fn = Calls()

    with pytest.raises(Blocked) as exc:
        run_guarded(make_action(), PARAMS, fn)

    assert fn.count == 0
    assert exc.value.reason.startswith("resilience state unavailable:")


@pytest.mark.django_db
def test_a_real_checkpoint_held_up_by_a_reader_is_retried_then_counted_as_one_failure(settings, tmp_path):
    settings.GRACE_ALLOWED_ROOTS = [str(tmp_path)]
    settings.GRACE_SQLITE_BUSY_TIMEOUT_MS = 20
    path = tmp_path / "app.sqlite3"
    checkpoint = load_all().get("sqlite.checkpoint")
    params = checkpoint.validate({"path": str(path)})
    target = checkpoint.target(params)
    reset_breaker(checkpoint.name, target, actor="test")
    with closing(sqlite3.connect(path, isolation_level=None)) as app, closing(sqlite3.connect(path)) as reader:
        app.execute("PRAGMA journal_mode=WAL")
        app.execute("CREATE TABLE t (x)")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
        app.execute("INSERT INTO t VALUES (1)")
        attempts = []

        def execute():
            attempts.append(1)
            return checkpoint.execute(params)

        with pytest.raises(TransientActionError):
            run_guarded(checkpoint, params, execute)
        reader.execute("COMMIT")

        assert len(attempts) == 3
        state, failures, _, _ = resilience._breaker_state(checkpoint.name, target)
        assert (state, failures) == ("closed", 1)
        assert run_guarded(checkpoint, params, lambda: checkpoint.execute(params))["checkpointed"] is True
        assert resilience._breaker_state(checkpoint.name, target)[1] == 0
