"""The operator's console, page by page (rendered by Django's test client; the 1,400 px layout is checked in
Chromium by tests/governance/test_console_browser.py)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from remediation.choices import RunStatus
from remediation.models import HealRun, RunEvent
from tests.support import console

pytestmark = pytest.mark.django_db
S = RunStatus


@pytest.fixture
def data(admin_user):
    root = Path(settings.GRACE_ALLOWED_ROOTS[0]) / f"console-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    return console.populate(root, user=admin_user)


@pytest.fixture
def browser(client, admin_user):
    client.force_login(admin_user)
    return client


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def test_the_admin_home_is_the_overview_and_view_site_opens_it(browser, data):
    page = text(browser.get("/admin/"))

    assert admin.site.site_url == "/admin/"
    assert browser.get("/").url == "/admin/"
    for section in (
        "pending-approvals",
        "escalated-incidents",
        "runs-in-flight",
        "open-incidents",
        "breakers",
        "last-week",
        "sweeps",
        "benchmarks",
    ):
        assert f'id="{section}"' in page, section
    assert f"Review #{data.request.pk}" in page
    assert "awaiting_approval" in page  # runs in flight by stage
    assert "Every admin page" in page and reverse("admin:remediation_playbook_changelist") in page
    assert 'id="nav-sidebar"' not in page


def test_the_overview_shows_only_what_the_viewer_may_see(client, data, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-123456", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_incident"))
    client.force_login(viewer)

    page = text(client.get("/admin/"))

    assert 'id="open-incidents"' in page and 'id="escalated-incidents"' in page
    assert 'id="pending-approvals"' not in page and 'id="runs-in-flight"' not in page


def test_the_overview_costs_the_same_queries_with_many_more_runs(browser, data):
    with CaptureQueriesContext(connection) as few:
        text(browser.get("/admin/"))
    incident = data.incident
    HealRun.objects.bulk_create(
        HealRun(incident=incident, status=S.SUCCEEDED if i % 2 else S.ESCALATED, finished_at=incident.first_seen)
        for i in range(300)
    )
    with CaptureQueriesContext(connection) as many:
        text(browser.get("/admin/"))

    assert len(many) == len(few) <= 40, [q["sql"][:120] for q in many.captured_queries]


def test_the_run_page_is_a_view_page_with_the_timeline_first(browser, data):
    page = text(browser.get(reverse("admin:remediation_healrun_change", args=[data.healed.pk])))

    assert "View heal run" in page and 'name="_save"' not in page
    assert page.index('id="timeline"') < page.index('id="plan"') < page.index('id="contract"')
    stamps = re.findall(r"\d\d:\d\d:\d\d\.\d{3} UTC", page)
    assert len(stamps) >= data.healed.events.count()
    assert page.count('class="grace-bar"') >= data.healed.events.exclude(to_status="").count() - 1
    assert "sqlite.checkpoint" in page and "wal_bytes ≤ 1048576 within 10 s" in page
    assert "held" in page  # the contract, expected against actual
    assert reverse("admin:remediation_snapshot_change", args=[data.healed.snapshots.get().pk]) in page
    assert reverse("admin:incidents_incident_change", args=[data.healed.incident_id]) in page
    assert "{&quot;" not in page and '{"' not in page  # no raw JSON


def test_each_timeline_row_appears_once(browser, data):
    page = text(browser.get(reverse("admin:remediation_healrun_change", args=[data.healed.pk])))

    for event in RunEvent.objects.filter(run=data.healed).exclude(note=""):
        assert page.count(f">{event.note}<") == 1, event.note


def test_a_waiting_run_links_to_its_approval_request_and_back(browser, data):
    run_page = text(browser.get(reverse("admin:remediation_healrun_change", args=[data.waiting.pk])))
    review = text(browser.get(reverse("admin:approvals_approvalrequest_change", args=[data.request.pk])))

    assert reverse("admin:approvals_approvalrequest_change", args=[data.request.pk]) in run_page
    assert "Approve or reject it" in run_page
    assert reverse("admin:remediation_healrun_change", args=[data.waiting.pk]) in review
    assert reverse("admin:incidents_incident_change", args=[data.waiting.incident_id]) in review


def test_the_approval_page_puts_the_decision_first_then_readable_steps_and_reasons(browser, data):
    page = text(browser.get(reverse("admin:approvals_approvalrequest_change", args=[data.request.pk])))

    assert page.index('id="decision-form"') < page.index('id="plan"') < page.index('id="tier-reasons"')
    assert page.index('id="tier-reasons"') < page.index('id="policy-explanation"')
    assert "sqlite.checkpoint</b>" in page and "on resource <b>db</b>" in page
    assert "tier floor of service billing-db" in page
    assert "<pre" not in page and '{"' not in page and "{&quot;" not in page


def test_an_escalation_for_a_missing_resource_says_to_add_it_to_the_inventory(browser, data):
    page = text(browser.get(reverse("admin:remediation_healrun_change", args=[data.missing.pk])))

    assert 'id="next-steps"' in page
    assert "Add the postgres resource of service search to the inventory" in page
    assert reverse("admin:incidents_resource_add") + "?kind=postgres" in page.replace("&amp;", "&")


def test_an_escalation_with_evidence_shows_it_as_tables(browser, data):
    page = text(browser.get(reverse("admin:remediation_healrun_change", args=[data.evidence.pk])))

    assert 'id="evidence"' in page and "host.top_processes" in page
    assert "<th>pid</th>" in page and "Read the evidence below" in page


def test_a_blocked_run_says_why_and_what_to_do(browser, data):
    page = text(browser.get(reverse("admin:remediation_healrun_change", args=[data.blocked.pk])))

    assert data.blocked.status == S.BLOCKED and "cooldown" in data.blocked.status_reason
    assert 'value="rerun"' in page


def test_the_run_list_shows_why_each_run_ended(browser, data):
    page = text(browser.get(reverse("admin:remediation_healrun_changelist")))

    assert "Heal runs</h1>" in page and "Why it ended (or waits)" in page
    assert "cooldown" in page and "no playbook for database_locked fits service search" in page


def test_the_incident_page_shows_both_environments_and_links_its_runs(browser, data):
    incident = data.waiting.incident
    page = text(browser.get(reverse("admin:incidents_incident_change", args=[incident.pk])))

    assert "View incident" in page
    assert "inventory&#x27;s (used)</th><td>production</td>" in page
    assert "the signal claimed (evidence only)</th><td>staging</td>" in page
    assert re.search(r"first seen.*\d\d:\d\d:\d\d\.\d{3} UTC", page, re.S | re.I)
    assert reverse("admin:remediation_healrun_change", args=[data.waiting.pk]) in page
    listing = text(browser.get(reverse("admin:incidents_incident_changelist")))
    assert reverse("admin:remediation_healrun_change", args=[data.waiting.pk]) in listing


def test_benchmark_pages_round_values_and_say_what_each_result_means(browser, data):
    page = text(browser.get(reverse("admin:learning_benchmarkrun_change", args=[data.benchmark.pk])))
    charts = text(browser.get(reverse("admin:learning_suite_charts", args=[data.benchmark.suite_id])))

    assert "run #" in page and "of suite console-smoke" in page
    assert not re.search(r"\d\.\d{5,}", page)  # no 16-decimal values
    assert "regression (3 of the last 5 runs over)" in page
    assert "within the baseline" in page and "icon-no.svg" not in page
    assert '<polygon class="band"' in charts and 'class="warn"' in charts and 'class="alert"' in charts
    assert "drawn from the run where a metric first has" in charts
