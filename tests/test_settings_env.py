"""Settings come from the environment and fail loudly, naming the variable."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from grace_site import env

ROOT = Path(__file__).resolve().parents[1]


def _import_settings(tmp_path, show="SECRET_KEY", **overrides):
    """Start Django in a child with the environment ``overrides``; it prints the setting ``show``."""
    unset = ("DATABASE_URL", "DJANGO_SECRET_KEY", "GRACE_INTAKE_CONSUMERS")
    child_env = {k: v for k, v in os.environ.items() if k not in unset}
    child_env.update({"GRACE_VAR_DIR": str(tmp_path), **overrides})
    code = f"import django; from django.conf import settings; django.setup(); print(settings.{show})"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DJANGO_DEBUG", "maybe"),
        ("DJANGO_ALLOWED_HOSTS", "a.example,,b.example"),
        ("DJANGO_SECRET_KEY", "too-short"),
        ("DATABASE_URL", "mysql://db/grace"),
        ("DATABASE_URL", "postgres://host:notaport/grace"),
        ("REDIS_URL", "http://127.0.0.1:6379/0"),
        ("GRACE_PORT", "eighty"),
        ("GRACE_PORT", "70000"),
        ("GRACE_WEBHOOK_TOKEN", "short"),
        ("GRACE_TASK_TIME_LIMIT", "1.5"),
        ("GRACE_HEALTH_BEAT_MAX_AGE", "0"),
        ("GRACE_HEALTH_WORKER_TIMEOUT", "soon"),
        ("GRACE_PROBE_ALLOWED_HOSTS", "127.0.0.*"),
        ("GRACE_PROBE_ALLOWED_HOSTS", "api.*.example.com"),
        ("GRACE_PROBE_LOOPBACK_PORTS", "8000,redis"),
        ("GRACE_PROBE_LOOPBACK_PORTS", "0"),
        ("GRACE_SNAPSHOT_TARGET_QUOTA", "lots"),
        ("GRACE_SNAPSHOT_TOTAL_QUOTA", "0"),
        ("GRACE_SNAPSHOT_MIN_FREE", "-1GiB"),
        ("GRACE_RESILIENCE_STATE_TTL", "10"),  # shorter than the breaker's reset timeout
        ("GRACE_AUTH_FAILURE_LIMIT", "lots"),
        ("GRACE_LOGIN_FAILURE_LIMIT", "0"),
        ("GRACE_TRUSTED_PROXIES", "-1"),
        ("GRACE_API_MAX_BODY_BYTES", "lots"),
        ("GRACE_INTAKE_MAX_BODY_BYTES", "100"),
        ("GRACE_API_MAX_JSON_DEPTH", "1000"),
        ("GRACE_API_MAX_KEY_LENGTH", "8"),
        ("GRACE_AUDIT_SIGNING_KEY", "not-a-key"),
        ("GRACE_AUDIT_SIGNING_KEY", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
        ("GRACE_AUDIT_SIGNING_KEY_FILE", "/nonexistent/audit-key.pem"),
        ("GRACE_AUDIT_CHECKPOINT_SINKS", "ftp://example.com/checkpoints"),
        ("GRACE_AUDIT_CHECKPOINT_SINKS", "relative/checkpoints.jsonl"),
        ("GRACE_AUDIT_S3_LOCK_MODE", "LEGAL_HOLD"),
        ("GRACE_AUDIT_ORIGIN", "two words"),
        ("GRACE_AUDIT_CHECKPOINT_SECONDS", "0"),
        ("GRACE_INTAKE_LINGER_SECONDS", "-0.5"),
        ("GRACE_INTAKE_CONSUMERS", "0"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(tmp_path, name, value):
    result = _import_settings(tmp_path, **{name: value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("database_url", "consumers"),
    [(None, "1"), ("sqlite:///grace.sqlite3", "1"), ("postgres://grace@127.0.0.1:5432/grace", "2")],
)
def test_sqlite_has_one_intake_consumer_by_default_and_postgresql_two(tmp_path, database_url, consumers):
    """SQLite's single writer takes one consumer; the variable still decides when it is set."""
    overrides = {} if database_url is None else {"DATABASE_URL": database_url}
    result = _import_settings(tmp_path, show="GRACE_INTAKE_CONSUMERS", **overrides)
    assert result.stdout.strip() == consumers, result.stderr
    result = _import_settings(tmp_path, show="GRACE_INTAKE_CONSUMERS", GRACE_INTAKE_CONSUMERS="3", **overrides)
    assert result.stdout.strip() == "3", result.stderr


def test_the_secret_key_is_generated_once_and_kept_private(tmp_path):
    first = _import_settings(tmp_path)
    second = _import_settings(tmp_path)

    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "secret_key"
    assert first.stdout.strip() == second.stdout.strip() == key_file.read_text().strip()
    assert len(first.stdout.strip()) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_secret_key_from_the_environment_wins(tmp_path):
    result = _import_settings(tmp_path, DJANGO_SECRET_KEY="k" * 40)

    assert result.stdout.strip() == "k" * 40
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(("raw", "expected"), [("yes", True), ("0", False), ("ON", True), ("", False)])
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env.env_bool("X_FLAG", not expected) is expected


def test_env_int_enforces_its_bounds(monkeypatch):
    monkeypatch.setenv("X_INT", "5")
    with pytest.raises(ImproperlyConfigured, match="X_INT must be at least 10"):
        env.env_int("X_INT", 20, minimum=10)


def test_database_urls_map_to_django_settings(monkeypatch):
    monkeypatch.setenv("X_DB", "postgres://grace:s3cret@db.internal:6543/ops")
    pg = env.env_database("X_DB", "unused")
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql",
        "ops",
        "grace",
        "s3cret",
        "db.internal",
        "6543",
    )
    monkeypatch.setenv("X_DB", "sqlite:////srv/grace/db.sqlite3")
    lite = env.env_database("X_DB", "unused")
    assert lite["NAME"] == "/srv/grace/db.sqlite3"
    assert lite["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in lite["OPTIONS"]["init_command"]
