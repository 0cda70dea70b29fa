"""Links to heal runs for other apps' admin pages, provided through grace_site.links (they never name ours)."""

from __future__ import annotations

from django.urls import reverse

from grace_site import links
from remediation.models import HealRun


def run_url(run_id: int) -> str:
    return reverse("admin:remediation_healrun_change", args=[run_id])


def runs_of_incident(incident_id: int) -> list[dict]:
    """The incident's runs, newest first: ``[{"id", "status", "reason", "created_at", "finished_at", "url"}]``."""
    rows = (
        HealRun.objects.filter(incident_id=incident_id)
        .order_by("-created_at")
        .values("id", "status", "status_reason", "created_at", "finished_at")[:50]
    )
    return [{**row, "reason": row.pop("status_reason"), "url": run_url(row["id"])} for row in rows]


def runs_list_url(incident_id: int) -> str:
    return f"{reverse('admin:remediation_healrun_changelist')}?incident__id__exact={incident_id}"


def register() -> None:
    links.provide("run_url", run_url)
    links.provide("runs_of_incident", runs_of_incident)
    links.provide("runs_list_url", runs_list_url)
