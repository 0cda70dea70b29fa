"""The audit log is append-only in the database and its hash chain shows tampering."""

import subprocess
import sys
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from approvals import audit
from approvals.models import GENESIS_HASH, AuditEvent
from tests.support import audit as audit_lock
from tests.support.processes import ROOT, process_env


def _append(n: int) -> list[AuditEvent]:
    return [audit.record("test.event", actor="tester", obj=("thing", i), data={"i": i}) for i in range(n)]


@pytest.mark.django_db
def test_each_event_links_to_the_previous_one():
    first, second, third = _append(3)

    assert (first.seq, second.seq, third.seq) == (1, 2, 3)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert audit.compute_hash(AuditEvent.objects.get(seq=2)) == second.hash


@pytest.mark.django_db
def test_record_names_users_objects_and_normalizes_data(admin_user):
    event = audit.record("test.user", actor=admin_user, obj=admin_user, data={"ratio": 2.0, "when": None})

    stored = AuditEvent.objects.get(seq=event.seq)
    assert (stored.actor, stored.object_type, stored.object_id) == ("root", "auth.user", str(admin_user.pk))
    assert stored.data == {"ratio": 2, "when": None}
    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_the_database_rejects_update_of_an_audit_row():
    _append(2)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE approvals_auditevent SET actor = %s WHERE seq = 1", ["mallory"])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(seq=2).update(action="edited")

    assert AuditEvent.objects.get(seq=1).actor == "tester"


@pytest.mark.django_db
def test_the_database_rejects_delete_of_an_audit_row():
    _append(2)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM approvals_auditevent WHERE seq = 1")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.all().delete()

    assert AuditEvent.objects.count() == 2


@pytest.mark.django_db
def test_verify_audit_names_the_first_tampered_seq():
    _append(5)
    audit_lock.drop_triggers()  # rolled back with the test's transaction
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE approvals_auditevent SET data = %s WHERE seq = 3",
            ['{"i": 999}'],
        )

    with pytest.raises(CommandError, match=r"broken at seq 3: stored hash does not match"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_verify_audit_names_a_missing_event():
    _append(4)
    audit_lock.drop_triggers()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM approvals_auditevent WHERE seq = 2")

    report = audit.verify_chain()

    assert (report.ok, report.broken_seq, report.count) == (False, 2, 1)
    assert "seq 2 is missing" in report.reason


@pytest.mark.django_db(transaction=True)
def test_verify_audit_exits_non_zero_from_the_command_line():
    _append(3)
    command = [sys.executable, "manage.py", "verify_audit"]
    intact = subprocess.run(command, cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=60)
    assert intact.returncode == 0, intact.stderr
    assert "3 events verified" in intact.stdout

    audit_lock.unlock("test: tamper with seq 2")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE approvals_auditevent SET actor = %s WHERE seq = 2", ["mallory"])
    audit_lock.lock()
    broken = subprocess.run(command, cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=60)

    assert broken.returncode != 0
    assert "broken at seq 2" in broken.stderr


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_leave_one_unbroken_chain():
    threads, per_thread = 8, 500
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                audit.record("test.concurrent", actor=f"writer-{n}", data={"i": i})
        except BaseException as exc:  # reported below, with the thread's error
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()

    assert errors == []
    report = audit.verify_chain()
    assert report.ok, report.reason
    assert report.count == threads * per_thread
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 4001))


@pytest.mark.django_db
def test_record_many_makes_the_same_links_as_recording_one_by_one():
    audit.record("test.before", actor="tester")
    batch = audit.record_many(
        [{"action": "test.batch", "actor": "tester", "obj": ("thing", i), "data": {"i": i}} for i in range(50)]
    )
    audit.record("test.after", actor="tester")

    assert [e.seq for e in batch] == list(range(2, 52))
    assert batch[0].prev_hash == AuditEvent.objects.get(seq=1).hash
    assert AuditEvent.objects.get(seq=52).prev_hash == batch[-1].hash
    report = audit.verify_chain()
    assert report.ok and report.count == 52
    assert audit.record_many([]) == []
