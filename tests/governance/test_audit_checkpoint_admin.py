"""The admin's audit pages: entries before and after sealing, and the latest checkpoint, its age and whether it
verifies."""

import re

import pytest

from approvals import audit, checkpoints
from approvals.models import AuditCheckpoint, AuditEvent, AuditSeal
from tests.support import audit as audit_lock

pytestmark = pytest.mark.django_db

PAGE = "/admin/approvals/auditcheckpoint/"


@pytest.fixture(autouse=True)
def sink(settings, tmp_path):
    settings.GRACE_AUDIT_CHECKPOINT_SINKS = [f"file://{tmp_path / 'checkpoints.jsonl'}"]


def _checkpoint_panel(page: str) -> str:
    start = page.index('id="latest-checkpoint"')
    return page[start : page.index("</div>", start)]


def test_the_checkpoint_page_shows_the_latest_checkpoint_its_age_and_that_it_verifies(client, make_user):
    for i in range(3):
        audit.record("test.event", actor="tester", data={"i": i})
    audit.seal()
    checkpoint = checkpoints.issue()
    client.force_login(make_user("auditor-1", "GRACE auditors"))

    panel = _checkpoint_panel(client.get(PAGE).content.decode())

    assert "yes: signed with GRACE's key" in panel
    assert f"(id {checkpoint.key_id})" in panel
    assert "the chain still has this head at seq 3" in panel
    age = re.search(r'id="checkpoint-age">(\d+) s \(signed ', panel)
    assert age and int(age.group(1)) < 60
    assert checkpoint.head in panel
    assert 'id="issue-checkpoint"' not in client.get(PAGE).content.decode()  # auditors read, they do not sign


def test_the_checkpoint_page_says_when_the_chain_no_longer_matches(client, admin_user):
    for i in range(3):
        audit.record("test.event", actor="tester", data={"i": i})
    audit.seal()
    checkpoints.issue()
    audit_lock.drop_triggers()
    AuditSeal.objects.filter(seq=3).update(hash="f" * 64)
    client.force_login(admin_user)

    panel = _checkpoint_panel(client.get(PAGE).content.decode())

    assert "<strong>no</strong>" in panel
    assert "the chain&#x27;s link at seq 3 is ffffffffffff" in panel


def test_the_checkpoint_page_says_when_there_is_none_yet(client, admin_user):
    audit.record("test.event")
    client.force_login(admin_user)

    panel = _checkpoint_panel(client.get(PAGE).content.decode())

    assert "No checkpoint has been issued yet (0 events sealed, 1 waiting)" in panel


def test_sealing_and_signing_now_needs_the_permission(client, admin_user, make_user):
    audit.record("test.event")
    client.force_login(make_user("auditor-2", "GRACE auditors"))
    assert client.post(f"{PAGE}issue/").status_code == 403
    assert not AuditCheckpoint.objects.exists()

    client.force_login(admin_user)
    response = client.post(f"{PAGE}issue/", follow=True)

    # the request is itself in the log, and in the checkpoint: the test's entry and the request
    assert "Sealed 2 entries; checkpoint of 2 events signed into 1 sink(s)" in response.content.decode()
    assert AuditCheckpoint.objects.get().requested_by == "root"
    assert AuditEvent.objects.get(action="audit.checkpoint_requested").actor == "root"


def test_the_audit_browser_lists_an_entry_at_once_and_its_seq_once_sealed(client, admin_user):
    event = audit.record("test.browse", actor="tester", obj=("thing", 7))
    client.force_login(admin_user)

    before = client.get("/admin/approvals/auditevent/", {"sealed": "no"}).content.decode()
    detail_before = client.get(f"/admin/approvals/auditevent/{event.pk}/change/").content.decode()
    audit.seal()
    after = client.get("/admin/approvals/auditevent/", {"sealed": "yes"}).content.decode()
    detail_after = client.get(f"/admin/approvals/auditevent/{event.pk}/change/").content.decode()

    assert "test.browse" in before and "(not sealed yet)" in detail_before
    assert "test.browse" in after
    assert AuditEvent.objects.get(pk=event.pk).seal.hash in detail_after


def test_the_audit_api_shows_seq_and_hash_once_sealed(api_client, admin_user):
    event = audit.record("test.api", actor="tester")
    api_client.force_authenticate(admin_user)

    before = api_client.get("/api/audit/").json()["results"][0]
    audit.seal()
    after = api_client.get("/api/audit/", {"seq": 1, "sealed": "true"}).json()["results"][0]

    assert (before["id"], before["action"], before["seq"], before["hash"]) == (event.pk, "test.api", None, None)
    assert (after["id"], after["seq"], after["prev_hash"]) == (event.pk, 1, "0" * 64)
    assert after["hash"] == AuditEvent.objects.get(pk=event.pk).seal.hash
