"""Fewer index entries per delivery and incident written.

- The user foreign keys of deliveries and incidents get partial indexes (only rows a user posted or raised):
  rows from a channel's token have no user, and every new version of a row writes an entry in every index.
- An incident's channel needs no index of its own: ``incident_channel_fp_status_idx`` leads with it.

The foreign-key indexes are dropped by name (the names Django gave them), so SQLite drops them in place
instead of copying the tables. On PostgreSQL the indexes are built and dropped ``CONCURRENTLY`` (the migration
is not atomic for that): ``incidents_delivery`` is the intake's hot table, and a plain build would hold its
writes, so the webhooks' answers, until it is done. A concurrent build that is interrupted leaves an invalid
index behind: drop it and migrate again.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import incidents.models

# (the index Django created for the foreign key, its table, its column)
FOREIGN_KEY_INDEXES = [
    ("incidents_delivery_raised_by_id_b5f94564", "incidents_delivery", "raised_by_id"),
    ("incidents_incident_channel_id_f5b0370c", "incidents_incident", "channel_id"),
    ("incidents_incident_raised_by_id_96486eeb", "incidents_incident", "raised_by_id"),
]
# (the partial index, its table)
USER_INDEXES = [("delivery_raised_by_idx", "incidents_delivery"), ("incident_raised_by_idx", "incidents_incident")]


def _concurrently(schema_editor) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def forwards(apps, schema_editor):
    how = _concurrently(schema_editor)
    for name, table in USER_INDEXES:
        schema_editor.execute(
            f'CREATE INDEX {how}IF NOT EXISTS "{name}" ON "{table}" ("raised_by_id") WHERE "raised_by_id" IS NOT NULL'
        )
    for name, _table, _column in FOREIGN_KEY_INDEXES:
        schema_editor.execute(f'DROP INDEX {how}IF EXISTS "{name}"')


def backwards(apps, schema_editor):
    how = _concurrently(schema_editor)
    for name, table, column in FOREIGN_KEY_INDEXES:
        schema_editor.execute(f'CREATE INDEX {how}IF NOT EXISTS "{name}" ON "{table}" ("{column}")')
    for name, _table in USER_INDEXES:
        schema_editor.execute(f'DROP INDEX {how}IF EXISTS "{name}"')


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("incidents", "0008_incident_dedupe_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="raised_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="The user who posted it with their own credentials, if any.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="incident",
                    name="channel",
                    field=models.ForeignKey(
                        db_index=False,
                        default=incidents.models._users_channel,
                        help_text="The integration that raised it.",
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="incidents",
                        to="incidents.channel",
                    ),
                ),
                migrations.AlterField(
                    model_name="incident",
                    name="raised_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="The user who raised it through the API (never an approver of its runs).",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AddIndex(
                    model_name="delivery",
                    index=models.Index(
                        condition=models.Q(("raised_by__isnull", False)),
                        fields=["raised_by"],
                        name="delivery_raised_by_idx",
                    ),
                ),
                migrations.AddIndex(
                    model_name="incident",
                    index=models.Index(
                        condition=models.Q(("raised_by__isnull", False)),
                        fields=["raised_by"],
                        name="incident_raised_by_idx",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
