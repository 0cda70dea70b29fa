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


def test_every_literal_action_the_code_records_is_registered():
    """A name only reached on a rare path (a broker outage...) is caught here, not by a 500 in production."""
    import re

    root = DOC.parents[1]
    pattern = re.compile(r"""(?:audit\.record\(\s*|["']action["']\s*:\s*)["']([a-z_]+\.[a-z_.]+)["']""")
    used = {
        (name, str(path.relative_to(root)))
        for app in ("grace_site", "incidents", "remediation", "approvals", "learning")
        for path in (root / app).rglob("*.py")
        if "actions" not in path.parts  # playbook steps name actions under "action" too
        for name in pattern.findall(path.read_text())
    }

    assert {(name, path) for name, path in used if name not in ACTIONS} == set()
    assert len(used) > 30  # the scan finds the code's records
