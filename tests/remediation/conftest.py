import pytest
from django.conf import settings

from incidents.models import DiagnosisRule
from remediation.models import Playbook


@pytest.fixture
def allowed_root():
    """A fresh directory of this test's own inside GRACE's first allowed root."""
    import uuid
    from pathlib import Path

    root = Path(settings.GRACE_ALLOWED_ROOTS[0]) / f"t-{uuid.uuid4().hex[:10]}"
    root.mkdir(parents=True)
    return root


@pytest.fixture
def wal_rule(db):
    return DiagnosisRule.objects.create(
        name="test: sqlite wal", code="database_wal_bloat", position=1, title_regex=r"(?i)\bWAL\b", confidence=0.9
    )


def make_playbook(name: str, code: str, steps: list[dict], *, tier: int = 1, **extra) -> Playbook:
    return Playbook.objects.create(
        name=name, diagnosis_codes=[code], steps=steps, tier=tier, cooldown_seconds=0, **extra
    )


def checkpoint_steps(*, contract: list[dict] | None = None) -> list[dict]:
    """One checkpoint of the incident's service's SQLite resource."""
    return [
        {
            "action": "sqlite.checkpoint",
            "contract": contract if contract is not None else [{"field": "wal_bytes", "op": "<=", "value": 1048576}],
        }
    ]
