import django.db.models.deletion
from django.db import migrations, models

import incidents.models


class Migration(migrations.Migration):
    """Every incident has its channel now (0003 gave one to each existing incident)."""

    dependencies = [
        ("incidents", "0003_inventory_and_channels"),
    ]

    operations = [
        migrations.AlterField(
            model_name="incident",
            name="channel",
            field=models.ForeignKey(
                default=incidents.models._users_channel,
                help_text="The integration that raised it.",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="incidents",
                to="incidents.channel",
            ),
        ),
        migrations.AddConstraint(
            model_name="incident",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status__in", ["open", "healing", "escalated"])),
                fields=("channel", "fingerprint"),
                name="incident_one_active_per_channel_fingerprint",
            ),
        ),
    ]
