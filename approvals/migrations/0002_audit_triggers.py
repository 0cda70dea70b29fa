"""Database triggers that make the audit log append-only.

UPDATE and DELETE on approvals_auditevent are rejected by the database itself,
on SQLite and PostgreSQL alike (TRUNCATE too on PostgreSQL). The only way past
them is a row in ``approvals_audit_unlock``, a table no model maps and no
code path of GRACE writes: it exists so that a test harness can empty the
table between tests, and so that an operator archiving old events must do so
deliberately, in SQL, where it shows.
"""

from django.db import migrations

SQLITE_FORWARD = [
    "CREATE TABLE IF NOT EXISTS approvals_audit_unlock (reason TEXT NOT NULL)",
    """CREATE TRIGGER approvals_auditevent_no_update BEFORE UPDATE ON approvals_auditevent
       WHEN NOT EXISTS (SELECT 1 FROM approvals_audit_unlock)
       BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE rejected'); END""",
    """CREATE TRIGGER approvals_auditevent_no_delete BEFORE DELETE ON approvals_auditevent
       WHEN NOT EXISTS (SELECT 1 FROM approvals_audit_unlock)
       BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE rejected'); END""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_update",
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_delete",
    "DROP TABLE IF EXISTS approvals_audit_unlock",
]

POSTGRES_FORWARD = [
    "CREATE TABLE IF NOT EXISTS approvals_audit_unlock (reason TEXT NOT NULL)",
    """CREATE OR REPLACE FUNCTION approvals_auditevent_immutable() RETURNS trigger AS $$
       BEGIN
         IF NOT EXISTS (SELECT 1 FROM approvals_audit_unlock) THEN
           RAISE EXCEPTION 'audit log is append-only: % rejected', TG_OP
             USING ERRCODE = 'insufficient_privilege';
         END IF;
         IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
         RETURN NEW;
       END;
       $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER approvals_auditevent_no_change BEFORE UPDATE OR DELETE ON approvals_auditevent
       FOR EACH ROW EXECUTE FUNCTION approvals_auditevent_immutable()""",
    """CREATE TRIGGER approvals_auditevent_no_truncate BEFORE TRUNCATE ON approvals_auditevent
       FOR EACH STATEMENT EXECUTE FUNCTION approvals_auditevent_immutable()""",
]
POSTGRES_BACKWARD = [
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_change ON approvals_auditevent",
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_truncate ON approvals_auditevent",
    "DROP FUNCTION IF EXISTS approvals_auditevent_immutable()",
    "DROP TABLE IF EXISTS approvals_audit_unlock",
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


class Migration(migrations.Migration):
    dependencies = [("approvals", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
        )
    ]
