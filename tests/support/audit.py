"""Test-harness access to the audit log's maintenance lock.

The append-only triggers let rows of the audit tables (entries, seals, checkpoints) be removed only while
``approvals_audit_unlock`` holds a row. Transactional tests need that to empty the tables between tests;
every test starts locked.
"""

from django.db import connection, transaction

TABLES = ("approvals_auditevent", "approvals_auditseal", "approvals_auditcheckpoint")


def lock() -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM approvals_audit_unlock")


def unlock(reason: str = "test harness flush") -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM approvals_audit_unlock")
        cursor.execute("INSERT INTO approvals_audit_unlock (reason) VALUES (%s)", [reason])


def drop_triggers() -> None:
    """Remove the append-only triggers of every audit table (inside the caller's transaction): what an
    insider with the database's owner rights can do."""
    with connection.cursor() as cursor:
        for table in TABLES:
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER {table}_no_change ON {table}")
                cursor.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
            else:
                cursor.execute(f"DROP TRIGGER {table}_no_update")
                cursor.execute(f"DROP TRIGGER {table}_no_delete")
