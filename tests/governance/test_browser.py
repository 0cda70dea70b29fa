"""Two approvers approve a tier-3 run in the admin, driven through Debian's Chromium; the run then
executes on a real Celery worker and succeeds."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import sync_playwright

from approvals.models import ApprovalRequest, AuditEvent
from incidents.models import DiagnosisRule
from incidents.services import Signal, ingest
from remediation.choices import RunStatus
from remediation.models import Playbook
from tests.support import inventory
from tests.support.runs import bloated_wal_db, wait_for, wait_for_run, wal_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "approval-queue.png"


def _tier3_wal_incident(tmp_root: Path):
    DiagnosisRule.objects.create(
        name="test: sqlite wal", code="database_wal_bloat", position=1, title_regex=r"(?i)\bWAL\b", confidence=0.9
    )
    Playbook.objects.create(
        name="wal-checkpoint-two-person",
        diagnosis_codes=["database_wal_bloat"],
        tier=3,
        cooldown_seconds=0,
        steps=[
            {
                "action": "sqlite.checkpoint",
                "contract": [{"field": "wal_bytes", "op": "<=", "value": 1048576}],
            }
        ],
    )
    db = tmp_root / "orders.sqlite3"
    keeper = bloated_wal_db(db)
    inventory.resource("orders-db", "sqlite", db)
    incident = ingest(Signal(source="api", title="orders-db WAL is bloated", service="orders-db")).incident
    return incident, db, keeper


def _approve_in_browser(page, base: str, username: str, request_id: int, reason: str, shot: Path | None = None):
    page.context.clear_cookies()
    page.goto(f"{base}/admin/login/?next=/admin/approvals/approvalrequest/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}-123456")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/approvals/approvalrequest/")
    page.click(f"a.grace-review:text('Review #{request_id}')")
    page.wait_for_selector("#decision-form")
    page.fill("#id_reason", reason)
    if shot is not None:
        page.screenshot(path=str(shot), full_page=True)
    page.click("button.approve")
    page.wait_for_url("**/admin/approvals/approvalrequest/")
    page.wait_for_selector("ul.messagelist li.success")


def test_two_approvers_approve_a_tier_three_run_in_the_admin_and_it_succeeds(
    celery_worker, live_server, make_user, tmp_path
):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run the tests through scripts/with-services.sh, which installs it")
    root = Path(settings.GRACE_ALLOWED_ROOTS[0]) / f"t-{uuid.uuid4().hex[:10]}"
    root.mkdir(parents=True)
    first = make_user("alice", "GRACE senior approvers")
    second = make_user("bob", "GRACE senior approvers")
    incident, db, keeper = _tier3_wal_incident(root)
    waiting = wait_for_run(incident.pk, statuses=(RunStatus.AWAITING_APPROVAL,))
    request = ApprovalRequest.objects.get(run=waiting, status="pending")
    assert (request.tier, request.required_approvals) == (3, 2)
    screenshot = tmp_path / "approval-queue.png"

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1900, "height": 560},
        )
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.context.clear_cookies()
        page.goto(f"{live_server.url}/admin/login/?next=/admin/approvals/approvalrequest/")
        page.fill("#id_username", first.username)
        page.fill("#id_password", "pw-alice-123456")
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/approvals/approvalrequest/")
        page.screenshot(path=str(screenshot), full_page=True)
        review = tmp_path / "approval-review.png"
        _approve_in_browser(page, live_server.url, first.username, request.pk, "checkpoint only; WAL at 3 MiB", review)
        assert "still needs another approver" in page.inner_text("ul.messagelist")
        _approve_in_browser(page, live_server.url, second.username, request.pk, "second pair of eyes: fine")
        assert "it is now approved" in page.inner_text("ul.messagelist")
        browser.close()

    run = wait_for_run(incident.pk, timeout=90)
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert wal_bytes(db) <= 1024 * 1024
    assert keeper.execute("SELECT count(*) FROM orders").fetchone()[0] == 3000
    request.refresh_from_db()
    assert request.status == "approved"
    assert list(request.decisions.order_by("at").values_list("user__username", flat=True)) == ["alice", "bob"]
    assert AuditEvent.objects.filter(action="approval.decision", object_id=str(request.pk)).count() == 2
    wait_for(lambda: screenshot.stat().st_size > 10_000, what="a screenshot")
    if os.environ.get("GRACE_DOCS_SCREENSHOTS"):
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, DOCS_IMAGE)
        shutil.copyfile(review, DOCS_IMAGE.with_name("approval-review.png"))
    keeper.close()
