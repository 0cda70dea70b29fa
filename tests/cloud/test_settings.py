"""The cloud settings come from the environment and fail loudly, naming the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOW = (
    "import django, json; from django.conf import settings; django.setup(); "
    "print(json.dumps([settings.GRACE_DOCKER_HOSTS, settings.GRACE_AWS_ACCOUNTS, settings.GRACE_AWS_ENDPOINT_URL]))"
)


def _settings(tmp_path, **overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"GRACE_VAR_DIR": str(tmp_path), **overrides})
    return subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRACE_AWS_ENDPOINT_URL", "ftp://127.0.0.1:5000"),
        ("GRACE_AWS_ACCOUNTS", "prod"),
        ("GRACE_DOCKER_HOSTS", "edge=tcp://10.0.0.5:2375,=unix:///run/x.sock"),
        ("GRACE_KUBE_IN_CLUSTER", "maybe"),
        ("GRACE_CLOUD_STATUS_TIMEOUT", "0"),
    ],
)
def test_a_bad_cloud_setting_stops_start_up_naming_the_variable(tmp_path, name, value):
    result = _settings(tmp_path, **{name: value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.strip().splitlines()[-1]


def test_named_engines_and_accounts_are_parsed(tmp_path):
    result = _settings(
        tmp_path,
        GRACE_DOCKER_HOSTS="edge=tcp://10.0.0.5:2375, lab=unix:///run/lab.sock",
        GRACE_AWS_ACCOUNTS="prod=ops-prod",
        GRACE_AWS_ENDPOINT_URL="http://127.0.0.1:5000",
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        {"edge": "tcp://10.0.0.5:2375", "lab": "unix:///run/lab.sock"},
        {"prod": "ops-prod"},
        "http://127.0.0.1:5000",
    ]
