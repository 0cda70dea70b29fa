"""Playbook writes go through one service: validated, audited with before and after, and a used playbook is
disabled rather than deleted."""

from __future__ import annotations

import pytest

from approvals.models import AuditEvent
from learning import services as learning
from learning.models import PlaybookStatistics
from remediation import lifecycle, playbooks
from remediation.models import Playbook
from tests.learning.factories import make_run, outcome_kwargs
from tests.remediation.conftest import checkpoint_steps

pytestmark = pytest.mark.django_db


def _playbook(**changes) -> Playbook:
    playbook = Playbook(name="wal-checkpoint", diagnosis_codes=["sqlite_wal_bloat"], steps=checkpoint_steps())
    for name, value in changes.items():
        setattr(playbook, name, value)
    playbooks.save(playbook, actor="tester")
    return playbook


def _fail(playbook: Playbook) -> None:
    run = make_run(status="ROLLED_BACK")
    run.playbook = playbook
    run.save()
    learning.record_outcome(**outcome_kwargs(run, playbook=playbook.name, outcome="rolled_back"))
    lifecycle._maybe_pause(run)


def test_deleting_a_playbook_that_runs_used_is_a_409_and_changes_nothing(api_client, admin_user):
    playbook = _playbook()
    run = make_run()
    run.playbook = playbook
    run.save()
    api_client.force_authenticate(admin_user)

    response = api_client.delete(f"/api/playbooks/{playbook.pk}/")

    assert response.status_code == 409
    assert "disable it instead" in response.json()["detail"]
    assert Playbook.objects.filter(pk=playbook.pk).exists()
    assert not AuditEvent.objects.filter(action="playbook.deleted").exists()


def test_deleting_an_unused_playbook_is_audited_with_what_it_was(api_client, admin_user):
    playbook = _playbook()
    api_client.force_authenticate(admin_user)

    response = api_client.delete(f"/api/playbooks/{playbook.pk}/")

    assert response.status_code == 204
    event = AuditEvent.objects.get(action="playbook.deleted")
    assert event.data["before"]["steps"] == checkpoint_steps() and event.actor == admin_user.username


def test_the_admin_refuses_to_delete_a_used_playbook_with_a_message(client, admin_user):
    playbook = _playbook()
    run = make_run()
    run.playbook = playbook
    run.save()
    client.force_login(admin_user)

    client.post(f"/admin/remediation/playbook/{playbook.pk}/delete/", {"post": "yes"})

    assert Playbook.objects.filter(pk=playbook.pk).exists()


def test_an_edit_is_audited_with_before_and_after_values(api_client, admin_user):
    playbook = _playbook(tier=1)
    api_client.force_authenticate(admin_user)

    response = api_client.patch(f"/api/playbooks/{playbook.pk}/", {"tier": 2}, format="json")

    assert response.status_code == 200, response.json()
    event = AuditEvent.objects.filter(action="playbook.updated").latest("at")
    assert event.data == {"tier": {"before": 1, "after": 2}}


def test_enabling_a_paused_playbook_again_clears_its_failure_streak(settings):
    playbook = _playbook()
    for _ in range(learning.PAUSE_AFTER_FAILURES):
        _fail(playbook)
    playbook.refresh_from_db()
    assert not playbook.enabled and "paused after" in playbook.paused_reason

    playbook.enabled = True
    playbooks.save(playbook, actor="operator")

    stats = PlaybookStatistics.objects.get(playbook=playbook.name)
    assert stats.consecutive_failures == 0 and stats.rollbacks == learning.PAUSE_AFTER_FAILURES
    _fail(playbook)  # one more failure does not pause it again at once
    playbook.refresh_from_db()
    assert playbook.enabled and not playbook.paused_reason
    assert AuditEvent.objects.filter(action="learning.streak_reset").count() == 1


def test_steps_that_set_a_target_parameter_are_refused(api_client, admin_user):
    api_client.force_authenticate(admin_user)
    steps = [{"action": "sqlite.checkpoint", "params": {"path": "{labels.db_path}"}}]

    response = api_client.post(
        "/api/playbooks/", {"name": "free-text", "diagnosis_codes": ["x"], "steps": steps}, format="json"
    )

    assert response.status_code == 400
    assert "comes from the service's sqlite resource in the inventory" in str(response.json()["steps"])
    assert not Playbook.objects.filter(name="free-text").exists()


def test_a_label_filled_parameter_must_declare_what_it_allows(api_client, admin_user):
    api_client.force_authenticate(admin_user)
    steps = [{"action": "service.set_log_level", "params": {"level": "{labels.level}"}}]

    refused = api_client.post(
        "/api/playbooks/", {"name": "lvl", "diagnosis_codes": ["x"], "steps": steps}, format="json"
    )
    steps[0]["allow"] = {"level": {"values": ["INFO", "DEBUG"]}}
    accepted = api_client.post(
        "/api/playbooks/", {"name": "lvl", "diagnosis_codes": ["x"], "steps": steps}, format="json"
    )

    assert refused.status_code == 400 and "must declare what it allows" in str(refused.json())
    assert accepted.status_code == 201, accepted.json()
