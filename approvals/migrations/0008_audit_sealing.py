"""Appends without a lock: audit entries, seals and checkpoints.

``approvals_auditevent`` keeps the entries (its ``seq`` becomes the entry ``id``);
their chain links (seq, prev_hash, hash) move to ``approvals_auditseal``, written
by the sealer. Links already in the chain are copied unchanged, so the chain
verifies across the migration. ``approvals_auditcheckpoint`` keeps a copy of every
signed checkpoint.

The three tables are insert-only: triggers reject UPDATE and DELETE (and TRUNCATE
on PostgreSQL) unless ``approvals_audit_unlock`` holds a row, as in 0002. On
PostgreSQL a trigger also stamps each entry with the id of the transaction that
wrote it, which the sealer needs to find every committed entry without a lock.

One way only: the links cannot be folded back into the entries' table.
"""

import django.db.models.deletion
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

GENESIS_HASH = "0" * 64
TABLES = ("approvals_auditevent", "approvals_auditseal", "approvals_auditcheckpoint")

SQLITE_DROP_OLD = [
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_update",
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_delete",
]
POSTGRES_DROP_OLD = [
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_change ON approvals_auditevent",
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_truncate ON approvals_auditevent",
]


# ``$table`` is one of TABLES (constants, never input).
SQLITE_GUARDS = [
    """CREATE TRIGGER $table_no_update BEFORE UPDATE ON $table
       WHEN NOT EXISTS (SELECT 1 FROM approvals_audit_unlock)
       BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE rejected'); END""",
    """CREATE TRIGGER $table_no_delete BEFORE DELETE ON $table
       WHEN NOT EXISTS (SELECT 1 FROM approvals_audit_unlock)
       BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE rejected'); END""",
]
# approvals_auditevent_immutable() is the function 0002 created: it names the operation it rejects.
POSTGRES_GUARDS = [
    """CREATE TRIGGER $table_no_change BEFORE UPDATE OR DELETE ON $table
       FOR EACH ROW EXECUTE FUNCTION approvals_auditevent_immutable()""",
    """CREATE TRIGGER $table_no_truncate BEFORE TRUNCATE ON $table
       FOR EACH STATEMENT EXECUTE FUNCTION approvals_auditevent_immutable()""",
]


SQLITE_CREATE = [guard.replace("$table", table) for table in TABLES for guard in SQLITE_GUARDS]
POSTGRES_CREATE = [
    # The writing transaction's id, whatever the INSERT said: the sealer's horizon depends on it.
    """CREATE OR REPLACE FUNCTION approvals_auditevent_stamp() RETURNS trigger AS $$
       BEGIN
         NEW.txid := pg_current_xact_id()::text::bigint;
         RETURN NEW;
       END;
       $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER approvals_auditevent_stamp BEFORE INSERT ON approvals_auditevent
       FOR EACH ROW EXECUTE FUNCTION approvals_auditevent_stamp()""",
    *[guard.replace("$table", table) for table in TABLES for guard in POSTGRES_GUARDS],
]
SQLITE_DROP_NEW = [f"DROP TRIGGER IF EXISTS {t}_{op}" for t in TABLES for op in ("no_update", "no_delete")]
POSTGRES_DROP_NEW = [
    *[f"DROP TRIGGER IF EXISTS {t}_{op} ON {t}" for t in TABLES for op in ("no_change", "no_truncate")],
    "DROP TRIGGER IF EXISTS approvals_auditevent_stamp ON approvals_auditevent",
    "DROP FUNCTION IF EXISTS approvals_auditevent_stamp()",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            raise RuntimeError(
                f"GRACE's audit triggers support SQLite and PostgreSQL, not {schema_editor.connection.vendor}"
            )
        for statement in statements:
            schema_editor.execute(statement, params=None)

    return run


def restart_entry_ids(apps, schema_editor):
    """PostgreSQL: the new identity column starts after the entries already there."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "SELECT setval(pg_get_serial_sequence('approvals_auditevent', 'id'), COALESCE(MAX(id), 1), "
            "MAX(id) IS NOT NULL) FROM approvals_auditevent",
            params=None,
        )


def move_links(apps, schema_editor):
    """Every link already in the chain becomes a seal of its entry (entry id = old seq), unchanged."""
    schema_editor.execute(
        "INSERT INTO approvals_auditseal (seq, event_id, prev_hash, hash, sealed_at, horizon) "
        "SELECT id, id, prev_hash, hash, at, NULL FROM approvals_auditevent",
        params=None,
    )


def grant_checkpoint_view(apps, schema_editor):
    """The governance groups of 0004 read checkpoints too."""
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.get(content_type__app_label="approvals", codename="view_auditcheckpoint")
    for group in Group.objects.filter(
        name__in=["GRACE operators", "GRACE senior approvers", "GRACE auditors"],
        permissions__codename="view_auditevent",
    ):
        group.permissions.add(view)


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0007_api_tokens"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_DROP_OLD, "postgresql": POSTGRES_DROP_OLD}), migrations.RunPython.noop
        ),
        migrations.AlterModelOptions(name="auditevent", options={"ordering": ["-id"]}),
        migrations.RemoveConstraint(model_name="auditevent", name="audit_seq_positive"),
        migrations.RemoveIndex(model_name="auditevent", name="audit_object_idx"),
        migrations.RemoveIndex(model_name="auditevent", name="audit_action_idx"),
        migrations.RenameField(model_name="auditevent", old_name="seq", new_name="id"),
        migrations.AlterField(
            model_name="auditevent", name="id", field=models.BigAutoField(primary_key=True, serialize=False)
        ),
        migrations.RunPython(restart_entry_ids, migrations.RunPython.noop),
        migrations.AddField(
            model_name="auditevent",
            name="txid",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.CreateModel(
            name="AuditSeal",
            fields=[
                ("seq", models.BigIntegerField(primary_key=True, serialize=False)),
                (
                    "event",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT, related_name="seal", to="approvals.auditevent"
                    ),
                ),
                ("prev_hash", models.CharField(max_length=64, unique=True)),
                ("hash", models.CharField(max_length=64, unique=True)),
                ("sealed_at", models.DateTimeField()),
                ("horizon", models.BigIntegerField(blank=True, null=True)),
            ],
            options={
                "ordering": ["-seq"],
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("seq__gte", 1)), name="audit_seal_seq_positive"),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("seq", 1), _negated=True), ("prev_hash", GENESIS_HASH), _connector="OR"
                        ),
                        name="audit_seal_first_links_genesis",
                    ),
                ],
            },
        ),
        migrations.RunPython(move_links),
        migrations.RemoveField(model_name="auditevent", name="hash"),
        migrations.RemoveField(model_name="auditevent", name="prev_hash"),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["object_type", "object_id", "id"], name="audit_object_idx"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["action", "id"], name="audit_action_idx"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(condition=models.Q(("txid__isnull", False)), fields=["txid"], name="audit_txid_idx"),
        ),
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("size", models.BigIntegerField(help_text="Sealed entries covered: the seq of the head.")),
                (
                    "head",
                    models.CharField(
                        help_text="Hash of the link at seq = size (the genesis hash for 0).", max_length=64
                    ),
                ),
                ("issued_at", models.DateTimeField()),
                ("origin", models.CharField(max_length=100)),
                ("key_id", models.CharField(max_length=16)),
                ("body", models.TextField(help_text="The signed text.")),
                ("signature", models.CharField(help_text="Ed25519 signature of the body, base64.", max_length=128)),
                ("sinks", models.JSONField(default=dict, help_text='Each sink and "ok" or why writing failed.')),
                (
                    "requested_by",
                    models.CharField(blank=True, help_text="Who asked for it; empty: the schedule.", max_length=150),
                ),
            ],
            options={
                "ordering": ["-issued_at", "-id"],
                "permissions": [("issue_auditcheckpoint", "Can seal the audit log and issue a checkpoint on demand")],
                "indexes": [models.Index(fields=["issued_at"], name="audit_checkpoint_issued_idx")],
            },
        ),
        migrations.RunPython(
            _run({"sqlite": SQLITE_CREATE, "postgresql": POSTGRES_CREATE}),
            _run({"sqlite": SQLITE_DROP_NEW, "postgresql": POSTGRES_DROP_NEW}),
        ),
        migrations.RunPython(grant_checkpoint_view, migrations.RunPython.noop),
    ]
