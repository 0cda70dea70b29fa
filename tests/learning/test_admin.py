"""Admin pages: statistics, recommendations, rebuild, and SVG charts with no external assets."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from approvals.models import AuditEvent
from learning import services
from learning.charts import Point, line_chart
from learning.models import BenchmarkResult, BenchmarkRun, BenchmarkSuite, OutcomeRecord, PlaybookStatistics
from remediation.models import Playbook
from tests.learning.factories import make_run, outcome_kwargs


def _no_external_assets(html: str) -> None:
    assert re.findall(r'(?:src|href)="(https?://[^"]+)"', html) == []


@pytest.fixture
def admin_client_logged(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.mark.django_db
def test_statistics_admin_lists_confidence_and_links_recommendations(admin_client_logged):
    for outcome in ["succeeded", "succeeded", "succeeded", "failed"]:
        services.record_outcome(**outcome_kwargs(make_run(), outcome=outcome))

    page = admin_client_logged.get(reverse("admin:learning_playbookstatistics_changelist")).content.decode()

    assert "wal-checkpoint" in page
    assert "0.36 (raises the tier)" in page and "3 of 4" in page  # Wilson lower bound of 3/4, rounded
    assert reverse("admin:learning_recommendations") in page


@pytest.mark.django_db
def test_recommendations_page_ranks_playbooks_for_the_chosen_diagnosis(admin_client_logged):
    PlaybookStatistics.objects.create(
        diagnosis_code="db_locked", playbook="restart", attempts=10, successes=5, failures=5
    )
    PlaybookStatistics.objects.create(diagnosis_code="db_locked", playbook="kill", attempts=10, successes=9, failures=1)

    page = admin_client_logged.get(reverse("admin:learning_recommendations"), {"diagnosis": "db_locked"})

    html = page.content.decode()
    assert page.status_code == 200
    assert html.index("<td>kill</td>") < html.index("<td>restart</td>")
    _no_external_assets(html)


@pytest.mark.django_db
def test_rebuild_button_recomputes_statistics_and_is_audited(admin_client_logged):
    services.record_outcome(**outcome_kwargs(make_run(), outcome="succeeded"))
    PlaybookStatistics.objects.update(attempts=7, successes=7)

    response = admin_client_logged.post(reverse("admin:learning_rebuild_statistics"))

    assert response.status_code == 302
    assert PlaybookStatistics.objects.get().attempts == 1
    assert AuditEvent.objects.filter(action="learning.statistics_rebuilt", actor="root").exists()


@pytest.mark.django_db
def test_outcome_records_are_read_only_in_admin(admin_client_logged):
    record = services.record_outcome(**outcome_kwargs(make_run()))

    assert admin_client_logged.get(reverse("admin:learning_outcomerecord_change", args=[record.pk])).status_code == 200
    assert admin_client_logged.get(reverse("admin:learning_outcomerecord_add")).status_code == 403
    assert admin_client_logged.post(reverse("admin:learning_outcomerecord_delete", args=[record.pk])).status_code == 403
    assert OutcomeRecord.objects.count() == 1


@pytest.mark.django_db
def test_playbook_chart_is_inline_svg_of_the_daily_success_rate(admin_client_logged):
    for outcome in ["succeeded", "failed"]:
        services.record_outcome(**outcome_kwargs(make_run(), outcome=outcome))
    stats = PlaybookStatistics.objects.get()

    html = admin_client_logged.get(reverse("admin:learning_playbook_chart", args=[stats.pk])).content.decode()

    assert "<svg" in html and "daily success rate" in html
    assert re.search(r"<circle class=\"point\"[^>]*><title>[^<]*: 50.0 %</title>", html)
    _no_external_assets(html)


@pytest.mark.django_db
def test_suite_charts_show_each_metric_with_its_baseline_band_and_regressions(admin_client_logged):
    suite = BenchmarkSuite.objects.create(name="edge", checks=[{"kind": "database", "params": {}}])
    for i, (value, regression) in enumerate([(1.0, False), (1.1, False), (4.0, True)]):
        run = BenchmarkRun.objects.create(suite=suite, status="regressed" if regression else "passed")
        BenchmarkResult.objects.create(
            run=run,
            suite=suite,
            check_kind="database",
            metric="database.roundtrip_ms",
            unit="ms",
            ok=True,
            value=value,
            baseline_median=1.0 if i else None,
            threshold=2.0 if i else None,
            regression=regression,
        )

    html = admin_client_logged.get(reverse("admin:learning_suite_charts", args=[suite.pk])).content.decode()

    assert "database.roundtrip_ms" in html
    assert '<polygon class="band"' in html
    assert html.count('<circle class="alert"') == 1 and html.count('<circle class="point"') == 2
    _no_external_assets(html)


@pytest.mark.django_db
def test_run_now_action_queues_a_run_of_each_selected_suite(admin_client_logged, django_capture_on_commit_callbacks):
    suite = BenchmarkSuite.objects.create(name="edge", checks=[{"kind": "database", "params": {}}])

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client_logged.post(
            reverse("admin:learning_benchmarksuite_changelist"),
            {"action": "run_now", "_selected_action": [suite.pk]},
        )

    assert response.status_code == 302
    run = BenchmarkRun.objects.get(suite=suite)
    assert (run.status, run.trigger, len(callbacks)) == ("queued", "manual", 1)


def test_charts_escape_labels_and_draw_gaps_for_failed_checks():
    svg = line_chart([Point("<b>1</b>", 1.0), Point("2", None), Point("3", 2.0)], title="x<script>", unit="ms")

    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "<polyline" not in svg  # two single points separated by a gap: no line segment
    assert svg.count("<circle") == 2
    assert "no data yet" in line_chart([], title="empty")


@pytest.mark.django_db
def test_editing_a_suite_in_admin_validates_its_checks_and_is_audited(admin_client_logged):
    suite = BenchmarkSuite.objects.create(name="edge", checks=[{"kind": "database", "params": {}}])
    url = reverse("admin:learning_benchmarksuite_change", args=[suite.pk])

    refused = admin_client_logged.post(url, {"name": "edge", "checks": '[{"kind": "teleport"}]', "enabled": "on"})
    accepted = admin_client_logged.post(
        url, {"name": "edge", "description": "", "checks": '[{"kind": "redis", "params": {}}]', "enabled": "on"}
    )

    assert refused.status_code == 200 and "kind must be one of" in refused.content.decode()
    assert accepted.status_code == 302
    suite.refresh_from_db()
    assert suite.checks == [{"kind": "redis", "params": {}}]
    event = AuditEvent.objects.get(action="config.changed", object_type="learning.benchmarksuite")
    assert event.actor == "root" and event.data["changes"]["checks"]["after"] == [{"kind": "redis", "params": {}}]


@pytest.mark.django_db
def test_recommendations_page_includes_untried_enabled_playbooks_as_exploring(admin_client_logged):
    Playbook.objects.create(name="fresh", diagnosis_codes=["disk_full"])
    Playbook.objects.create(name="off", diagnosis_codes=["disk_full"], enabled=False)

    html = admin_client_logged.get(reverse("admin:learning_recommendations")).content.decode()

    assert '<option value="disk_full" selected>' in html
    assert "<td>fresh</td>" in html and "<td>off</td>" not in html
