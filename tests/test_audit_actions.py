"""The audit log's vocabulary: one registry, every name documented, nothing else written."""

from pathlib import Path

import pytest

from approvals import audit
from approvals.audit_actions import ACTIONS, UnknownAuditAction
from approvals.models import AuditEvent

DOC = Path(__file__).resolve().parents[1] / "docs" / "audit-actions.md"


def render() -> str:
    rows = ["| action | what it records |", "| --- | --- |"]
    rows += [f"| `{name}` | {meaning} |" for name, meaning in ACTIONS.items() if not name.startswith("test.")]
    return "\n".join(rows)


def test_every_registered_action_is_documented():
    text = DOC.read_text()
    start = text.index("<!-- actions: ")
    table = text[text.index("\n", start) + 1 : text.index("<!-- end of actions -->")].strip()

    assert table == render()


@pytest.mark.django_db
def test_an_unregistered_action_is_refused_and_nothing_is_written():
    before = AuditEvent.objects.count()

    with pytest.raises(UnknownAuditAction, match="'made.up' is not registered"):
        audit.record("made.up", actor="tester")

    assert AuditEvent.objects.count() == before
