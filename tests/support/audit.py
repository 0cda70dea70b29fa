"""Test-harness access to the audit log's maintenance lock.

The append-only triggers let rows be removed only while
``approvals_audit_unlock`` holds a row. Transactional tests need that to empty
the table between tests; every test starts locked.
"""

from django.db import connection, transaction


def lock() -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM approvals_audit_unlock")


def unlock(reason: str = "test harness flush") -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM approvals_audit_unlock")
        cursor.execute("INSERT INTO approvals_audit_unlock (reason) VALUES (%s)", [reason])


def drop_triggers() -> None:
    """Remove the append-only triggers (inside the caller's transaction)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("DROP TRIGGER approvals_auditevent_no_change ON approvals_auditevent")
            cursor.execute("DROP TRIGGER approvals_auditevent_no_truncate ON approvals_auditevent")
        else:
            cursor.execute("DROP TRIGGER approvals_auditevent_no_update")
            cursor.execute("DROP TRIGGER approvals_auditevent_no_delete")
