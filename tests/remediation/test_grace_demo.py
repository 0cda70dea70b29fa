"""`manage.py grace_demo` against a live GRACE: it finds the port `make run` used, heals a real WAL, says how to
approve a run that waits, and exits non-zero unless the run SUCCEEDED."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from incidents import defaults as incident_defaults
from remediation import defaults
from remediation.management.commands import grace_demo
from tests.support import inventory


def test_it_finds_the_url_make_run_wrote_when_grace_port_is_not_exported(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("GRACE_PORT", raising=False)
    settings.VAR_DIR, settings.GRACE_PORT = tmp_path, 8000
    (tmp_path / grace_demo.URL_FILE).write_text("http://127.0.0.1:8123\n")

    assert grace_demo.default_url() == "http://127.0.0.1:8123"
    monkeypatch.setenv("GRACE_PORT", "8124")
    settings.GRACE_PORT = 8124
    assert grace_demo.default_url() == "http://127.0.0.1:8124"


def test_without_the_file_or_grace_port_it_uses_the_default_port(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("GRACE_PORT", raising=False)
    settings.VAR_DIR, settings.GRACE_PORT = tmp_path, 8000

    assert grace_demo.default_url() == "http://127.0.0.1:8000"


@pytest.fixture
def shipped(db):
    incident_defaults.install()
    defaults.install()


@pytest.mark.django_db(transaction=True)
def test_the_demo_heals_the_wal_and_exits_zero(celery_worker, live_server, admin_user, shipped):
    out = io.StringIO()

    call_command("grace_demo", url=live_server.url, timeout=90, wal_mib=2, stdout=out)

    text = out.getvalue()
    assert "diagnosed 'database_wal_bloat'" in text
    assert "ended SUCCEEDED" in text and "-> SUCCEEDED" in text


@pytest.mark.django_db(transaction=True)
def test_a_run_waiting_for_approval_is_explained_and_the_demo_exits_non_zero(
    celery_worker, live_server, admin_user, shipped
):
    inventory.service(grace_demo.DEMO_SERVICE, environment="demo", tier_floor=2)  # a human must approve
    out = io.StringIO()

    with pytest.raises(CommandError, match="still waits for approval"):
        call_command("grace_demo", url=live_server.url, timeout=15, wal_mib=2, stdout=out)

    text = out.getvalue()
    assert "waits for approval: tier 2, 1 approval(s) needed" in text
    assert f"{live_server.url}/admin/approvals/approvalrequest/" in text
    assert "/approve/" in text and "did not raise this incident" in text


@pytest.mark.django_db(transaction=True)
def test_a_run_that_ends_anything_but_succeeded_makes_the_demo_fail(celery_worker, live_server, admin_user, shipped):
    from remediation.models import Playbook

    Playbook.objects.filter(name="sqlite-wal-checkpoint").update(enabled=False)

    with pytest.raises(CommandError, match=r"ended ESCALATED: no enabled playbook remedies database_wal_bloat"):
        call_command("grace_demo", url=live_server.url, timeout=60, wal_mib=2, stdout=io.StringIO())
