"""The governance groups and their permissions (created by migration 0004; repaired by ``install``).

- GRACE operators: approve or reject tier-2 requests; read runs, incidents, approvals and the audit log.
- GRACE senior approvers: everything operators can, plus tier-3 requests.
- GRACE auditors: read-only audit log, runs, incidents and approvals.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

OPERATORS = "GRACE operators"
SENIOR_APPROVERS = "GRACE senior approvers"
AUDITORS = "GRACE auditors"

READ_RUNS = [
    "remediation.view_healrun",
    "remediation.view_runevent",
    "remediation.view_actionattempt",
    "remediation.view_snapshot",
    "remediation.view_contractresult",
    "remediation.view_playbook",
    "incidents.view_incident",
]
READ_GOVERNANCE = [
    "approvals.view_auditevent",
    "approvals.view_auditcheckpoint",
    "approvals.view_approvalrequest",
    "approvals.view_approvaldecision",
    "approvals.view_policyrule",
]
GROUPS = {
    OPERATORS: READ_RUNS + READ_GOVERNANCE + ["approvals.approve_tier2"],
    SENIOR_APPROVERS: READ_RUNS + READ_GOVERNANCE + ["approvals.approve_tier2", "approvals.approve_tier3"],
    AUDITORS: READ_RUNS + READ_GOVERNANCE,
}


def ensure_groups() -> int:
    """Create missing groups and add missing permissions. Returns how many groups were created."""
    created = 0
    for name, perms in GROUPS.items():
        group, made = Group.objects.get_or_create(name=name)
        created += int(made)
        for dotted in perms:
            app_label, codename = dotted.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return created
