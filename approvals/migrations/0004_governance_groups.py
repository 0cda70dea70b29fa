"""The three governance groups, with their permissions.

- GRACE operators: approve or reject tier-2 requests; read runs, incidents,
  approvals and the audit log.
- GRACE senior approvers: everything operators can, plus tier-3 requests.
- GRACE auditors: read-only audit log, runs, incidents and approvals.

Users still need "staff status" to sign in to the admin.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

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
    "approvals.view_approvalrequest",
    "approvals.view_approvaldecision",
    "approvals.view_policyrule",
]
GROUPS = {
    "GRACE operators": READ_RUNS + READ_GOVERNANCE + ["approvals.approve_tier2"],
    "GRACE senior approvers": READ_RUNS + READ_GOVERNANCE + ["approvals.approve_tier2", "approvals.approve_tier3"],
    "GRACE auditors": READ_RUNS + READ_GOVERNANCE,
}


def create_groups(apps, schema_editor):
    # Permissions are normally created after all migrations; create them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for dotted in perms:
            app_label, codename = dotted.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(GROUPS)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0003_governance"),
        ("remediation", "0001_initial"),
        ("incidents", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
