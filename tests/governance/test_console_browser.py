"""The operator's console in Debian's Chromium at 1,400 px: every admin list and detail page GRACE adds, with
data, fits the window (no horizontal overflow of the main content, nor a hidden scroll area), answers without a
server error, and the run and approval pages show no raw JSON. Screenshots of the overview, a run and an
approval request are written to docs/img when GRACE_DOCS_SCREENSHOTS is set."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib import admin
from django.urls import reverse
from playwright.sync_api import sync_playwright

from learning.models import BenchmarkSuite, PlaybookStatistics
from tests.governance.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support import console

pytestmark = pytest.mark.django_db(transaction=True)

WIDTH = 1400
GRACE_APPS = ("approvals", "incidents", "remediation", "learning")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"

# Horizontal overflow of the main content: the page itself, #content, or any scroll area inside it.
OVERFLOW_JS = """() => {
  const out = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) out.push(`page ${doc.scrollWidth} px > ${window.innerWidth} px`);
  const main = document.querySelector('#content');
  if (main && main.scrollWidth > main.clientWidth + 1) out.push(`#content ${main.scrollWidth} > ${main.clientWidth}`);
  for (const el of (main ? main.querySelectorAll('*') : [])) {
    const style = getComputedStyle(el);
    if (['auto', 'scroll'].includes(style.overflowX) && el.scrollWidth > el.clientWidth + 1) {
      out.push(`${el.tagName.toLowerCase()}.${el.className} scrolls: ${el.scrollWidth} > ${el.clientWidth}`);
    }
  }
  return out;
}"""
# Text that parses as a non-empty JSON object or array, anywhere in the main content.
RAW_JSON_JS = """() => {
  const found = [];
  const leaves = ['pre', 'code', 'td', 'p', 'li', 'div'].map((tag) => `#content ${tag}`).join(', ');
  for (const el of document.querySelectorAll(leaves)) {
    if (el.children.length) continue;
    const text = el.textContent.trim();
    if (!/^[\\[{]/.test(text)) continue;
    try {
      const value = JSON.parse(text);
      if (value && typeof value === 'object' && Object.keys(value).length) found.push(text.slice(0, 80));
    } catch (e) {}
  }
  return found;
}"""


def _pages(data: console.Console) -> list[tuple[str, str]]:
    """(name, path) of every GRACE admin list and one detail page of each, and the console's own pages."""
    pages = [("overview", "/admin/")]
    models = [m for m in admin.site._registry if m._meta.app_label in GRACE_APPS]
    for model in sorted(models, key=lambda m: m._meta.label):
        info = f"{model._meta.app_label}_{model._meta.model_name}"
        pages.append((f"{model._meta.label} list", reverse(f"admin:{info}_changelist")))
        first = model._default_manager.order_by("pk").first()
        assert first is not None, f"no {model._meta.label} to show: the console data must create one"
        pages.append((f"{model._meta.label} detail", reverse(f"admin:{info}_change", args=[first.pk])))
    for run in (data.healed, data.waiting, data.missing, data.evidence, data.blocked):
        pages.append((f"run {run.status}", reverse("admin:remediation_healrun_change", args=[run.pk])))
    pages += [
        ("approval request", reverse("admin:approvals_approvalrequest_change", args=[data.request.pk])),
        ("benchmark run", reverse("admin:learning_benchmarkrun_change", args=[data.benchmark.pk])),
        ("breakers", reverse("admin:remediation_resilience")),
        ("recommendations", reverse("admin:learning_recommendations")),
        ("playbook chart", reverse("admin:learning_playbook_chart", args=[PlaybookStatistics.objects.first().pk])),
        ("suite charts", reverse("admin:learning_suite_charts", args=[BenchmarkSuite.objects.first().pk])),
    ]
    return pages


def test_every_console_page_fits_1400_px_without_errors_or_raw_json(live_server, admin_user, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run the tests through scripts/with-services.sh, which installs it")
    root = Path(settings.GRACE_ALLOWED_ROOTS[0]) / f"console-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    data = console.populate(root, user=admin_user)
    pages = _pages(data)
    shots = {
        "console-overview.png": "/admin/",
        "console-run.png": reverse("admin:remediation_healrun_change", args=[data.healed.pk]),
        "console-approval.png": reverse("admin:approvals_approvalrequest_change", args=[data.request.pk]),
    }
    problems: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": WIDTH, "height": 900},
        )
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.fill("#id_username", admin_user.username)
        page.fill("#id_password", "pw-root-123456")
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")
        for name, path in pages:
            response = page.goto(f"{live_server.url}{path}")
            if response is None or response.status >= 400:
                problems.append(f"{name} ({path}): HTTP {response.status if response else 'no response'}")
                continue
            overflow = page.evaluate(OVERFLOW_JS)
            if overflow:  # a picture of what did not fit, for whoever reads the failure
                picture = tmp_path / f"overflow-{len(problems)}.png"
                page.screenshot(path=str(picture), full_page=True)
                overflow[0] += f" (see {picture})"
            problems += [f"{name} ({path}): {issue}" for issue in overflow]
            if name.startswith(("run ", "approval request")):
                problems += [f"{name} ({path}): raw JSON {text!r}" for text in page.evaluate(RAW_JSON_JS)]
        for filename, path in shots.items():
            page.goto(f"{live_server.url}{path}")
            page.screenshot(path=str(tmp_path / filename), full_page=True)
        browser.close()

    assert len(pages) > 40
    assert not problems, "\n".join(problems)
    for filename in shots:
        assert (tmp_path / filename).stat().st_size > 20_000
        if os.environ.get("GRACE_DOCS_SCREENSHOTS"):
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / filename, DOCS_IMG / filename)
