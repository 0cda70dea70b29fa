"""The overview page: the admin's home (``/admin/``) and what "View site" opens. Thin: remediation.overview
builds it; each section shows only when the viewer may see its model."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse

from remediation import overview

# section -> the permission that shows it
SECTIONS = {
    "incidents": "incidents.view_incident",
    "runs": "remediation.view_healrun",
    "approvals": "approvals.view_approvalrequest",
    "resilience": "remediation.view_healrun",
    "sweeps": "incidents.view_sweeptarget",
    "benchmarks": "learning.view_benchmarkrun",
    "week": "learning.view_outcomerecord",
}


def overview_view(request):
    sections = {name for name, perm in SECTIONS.items() if request.user.has_perm(perm)}
    context = {
        **admin.site.each_context(request),
        "title": "Overview",
        "o": overview.build(sections=sections),
        "sections": sections,
        "sweep_k": settings.GRACE_SWEEP_PERSIST_K,
        "sweep_n": settings.GRACE_SWEEP_PERSIST_N,
    }
    request.current_app = admin.site.name
    return TemplateResponse(request, "admin/grace/overview.html", context)
