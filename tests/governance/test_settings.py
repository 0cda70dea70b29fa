"""Governance settings come from the environment and fail loudly, naming the variable."""

import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT

CODE = (
    "import django; from django.conf import settings; django.setup(); "
    "print(settings.GRACE_SHADOW_MODE, settings.GRACE_APPROVAL_TTL_MINUTES, settings.EMAIL_BACKEND)"
)


def _settings(tmp_path, **overrides):
    child_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    child_env.update({"GRACE_VAR_DIR": str(tmp_path), **overrides})
    return subprocess.run(
        [sys.executable, "-c", CODE], cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRACE_SHADOW_MODE", "sometimes"),
        ("GRACE_APPROVAL_TTL_MINUTES", "0"),
        ("GRACE_POLICY_MAX_BLAST_RADIUS", "many"),
        ("GRACE_POLICY_PRODUCTION_ENVIRONMENTS", "production,,prod"),
        ("GRACE_NOTIFY_MAX_RETRIES", "-1"),
        ("GRACE_EMAIL_BACKEND", "pigeon"),
        ("GRACE_EMAIL_PORT", "99999"),
    ],
)
def test_a_bad_governance_setting_names_the_variable(tmp_path, name, value):
    result = _settings(tmp_path, **{name: value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr


def test_governance_settings_are_read_from_the_environment(tmp_path):
    result = _settings(tmp_path, GRACE_SHADOW_MODE="on", GRACE_APPROVAL_TTL_MINUTES="45", GRACE_EMAIL_BACKEND="console")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "45", "django.core.mail.backends.console.EmailBackend"]
