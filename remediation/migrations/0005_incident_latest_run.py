from django.db import migrations
from django.db.models import Max


def backfill(apps, schema_editor):
    """Incidents name their latest run (incidents.Incident.latest_run_id), which intake used to look up."""
    Incident = apps.get_model("incidents", "Incident")
    HealRun = apps.get_model("remediation", "HealRun")
    latest = HealRun.objects.values("incident_id").annotate(last=Max("id"))
    for row in latest.iterator():
        Incident.objects.filter(pk=row["incident_id"]).update(latest_run_id=row["last"])


class Migration(migrations.Migration):
    dependencies = [
        ("incidents", "0006_incident_latest_run"),
        ("remediation", "0004_run_constraints"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
