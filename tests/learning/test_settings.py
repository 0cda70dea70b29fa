"""The learning settings fail loudly, naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRACE_CONFIDENCE_TIER_THRESHOLD", "1.5"),
        ("GRACE_PAUSE_AFTER_FAILURES", "0"),
        ("GRACE_BENCH_MAD_K", "lots"),
    ],
)
def test_a_bad_learning_setting_stops_start_up_naming_the_variable(tmp_path, name, value):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"GRACE_VAR_DIR": str(tmp_path), name: value})
    code = "import django; django.setup()"

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.splitlines()[-1]
