"""The audit log: lock-free appends, the sealer's one unbroken chain, insert-only tables, verify_audit."""

import subprocess
import sys
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, IntegrityError, connection, connections, transaction

from approvals import audit, sealing
from approvals.models import GENESIS_HASH, AuditCheckpoint, AuditEvent, AuditSeal
from tests.support import audit as audit_lock
from tests.support.processes import ROOT, process_env, start_beat
from tests.support.runs import wait_for

postgres_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="SQLite runs one writer at a time: no transaction can be in flight while another commits",
)


def _append(n: int) -> list[AuditEvent]:
    return [audit.record("test.event", actor="tester", obj=("thing", i), data={"i": i}) for i in range(n)]


def _seals() -> list[tuple[int, int]]:
    return list(AuditSeal.objects.order_by("seq").values_list("seq", "event_id"))


@pytest.mark.django_db
def test_an_entry_is_readable_at_once_and_gets_its_link_when_sealed():
    first, second, third = _append(3)

    assert AuditEvent.objects.get(pk=second.pk).data == {"i": 1}
    assert not AuditSeal.objects.exists()
    result = audit.seal()

    assert (result.sealed, result.head) == (3, 3)
    links = {s.event_id: s for s in AuditSeal.objects.all()}
    assert [links[e.pk].seq for e in (first, second, third)] == [1, 2, 3]
    assert links[first.pk].prev_hash == GENESIS_HASH
    assert links[second.pk].prev_hash == links[first.pk].hash
    assert links[third.pk].prev_hash == links[second.pk].hash
    assert audit.link_hash(seq=2, prev_hash=links[first.pk].hash, event=second) == links[second.pk].hash
    assert audit.seal().sealed == 0  # sealing again seals nothing twice


@pytest.mark.django_db
def test_record_names_users_objects_and_normalizes_data(admin_user):
    event = audit.record("test.user", actor=admin_user, obj=admin_user, data={"ratio": 2.0, "when": None})

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.actor, stored.object_type, stored.object_id) == ("root", "auth.user", str(admin_user.pk))
    assert stored.data == {"ratio": 2, "when": None}
    audit.seal()
    assert audit.verify_chain().count == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("table", "column"),
    [("approvals_auditevent", "actor"), ("approvals_auditseal", "hash"), ("approvals_auditcheckpoint", "body")],
)
def test_the_database_rejects_update_and_delete_of_every_audit_table(table, column):
    _append(2)
    audit.seal()
    AuditCheckpoint.objects.create(
        size=2, head="0" * 64, issued_at="2026-01-01T00:00:00Z", origin="grace", key_id="k", body="b", signature="s"
    )

    for statement in (f"UPDATE {table} SET {column} = 'x'", f"DELETE FROM {table}"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(statement)

    assert (AuditEvent.objects.count(), AuditSeal.objects.count(), AuditCheckpoint.objects.count()) == (2, 2, 1)


@pytest.mark.django_db
def test_the_orm_cannot_change_or_delete_entries_or_links():
    _append(2)
    audit.seal()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(actor="tester").update(action="edited")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditSeal.objects.all().delete()

    assert AuditSeal.objects.count() == 2


@pytest.mark.django_db
def test_a_seal_cannot_be_given_twice_nor_the_chain_forked():
    first, second = _append(2)
    now = first.at
    with pytest.raises(IntegrityError), transaction.atomic():  # a chain that does not start at genesis
        AuditSeal.objects.create(seq=1, event=first, prev_hash="d" * 64, hash="e" * 64, sealed_at=now)
    audit.seal()
    link = AuditSeal.objects.get(seq=1)

    with pytest.raises(IntegrityError), transaction.atomic():  # the same entry sealed again
        AuditSeal.objects.create(seq=3, event=first, prev_hash="a" * 64, hash="b" * 64, sealed_at=now)
    with pytest.raises(IntegrityError), transaction.atomic():  # a second link after seq 1: a fork
        AuditSeal.objects.create(
            seq=3, event=audit.record("test.late"), prev_hash=link.hash, hash="c" * 64, sealed_at=now
        )
    with pytest.raises(IntegrityError), transaction.atomic():  # two links at one seq
        AuditSeal.objects.create(
            seq=2, event=audit.record("test.late"), prev_hash="f" * 64, hash="9" * 64, sealed_at=now
        )


@pytest.mark.django_db
def test_verify_audit_names_the_first_tampered_seq():
    events = _append(5)
    audit.seal()
    audit_lock.drop_triggers()  # rolled back with the test's transaction
    AuditEvent.objects.filter(pk=events[2].pk).update(data={"i": 999})

    with pytest.raises(CommandError, match=r"broken at seq 3: stored hash does not match"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_verify_audit_names_a_missing_link():
    _append(4)
    audit.seal()
    audit_lock.drop_triggers()
    AuditSeal.objects.filter(seq=2).delete()

    report = audit.verify_chain()

    assert (report.ok, report.broken_seq, report.count) == (False, 2, 1)
    assert "seq 2 is missing" in report.reason


@pytest.mark.django_db
def test_verify_audit_reports_an_entry_the_chain_skipped():
    _append(2)
    audit.seal()
    audit_lock.drop_triggers()
    insert = (
        "INSERT INTO approvals_auditevent (id, at, actor, action, object_type, object_id, data) "
        "VALUES (%s, '2026-01-01 00:00:00', 'mallory', 'test.slipped', '', '', '{}') RETURNING id"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # An insider's row with a transaction id from long ago: behind the sealer's horizon.
            cursor.execute("ALTER TABLE approvals_auditevent DISABLE TRIGGER approvals_auditevent_stamp")
            cursor.execute(
                "INSERT INTO approvals_auditevent (at, actor, action, object_type, object_id, data, txid) "
                "VALUES (now(), 'mallory', 'test.slipped', '', '', '{}', 3) RETURNING id"
            )
        else:
            # An insider's row with an id below the last sealed one.
            cursor.execute(insert, [100])
            cursor.fetchone()
            audit.seal()
            cursor.execute(insert, [50])
        (slipped,) = cursor.fetchone()

    audit.seal()
    report = audit.verify_chain()

    assert not AuditSeal.objects.filter(event_id=slipped).exists()
    assert not report.ok
    assert f"entries {slipped} were committed but the chain skipped them" in report.problems


@pytest.mark.django_db(transaction=True)
def test_verify_audit_exits_non_zero_from_the_command_line():
    _append(3)
    audit.seal()
    command = [sys.executable, "manage.py", "verify_audit"]
    intact = subprocess.run(command, cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=60)
    assert intact.returncode == 0, intact.stderr
    assert "3 events verified" in intact.stdout

    audit_lock.unlock("test: tamper with seq 2")
    event_id = AuditSeal.objects.get(seq=2).event_id
    with connection.cursor() as cursor:
        cursor.execute("UPDATE approvals_auditevent SET actor = %s WHERE id = %s", ["mallory", event_id])
    audit_lock.lock()
    broken = subprocess.run(command, cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=60)

    assert broken.returncode != 0
    assert "broken at seq 2" in broken.stderr


@pytest.mark.django_db
def test_record_many_entries_are_sealed_one_after_another_in_order():
    before = audit.record("test.before", actor="tester")
    batch = audit.record_many(
        [{"action": "test.batch", "actor": "tester", "obj": ("thing", i), "data": {"i": i}} for i in range(50)]
    )
    after = audit.record("test.after", actor="tester")
    audit.seal(batch_size=7)  # several sealing transactions in one pass

    order = [event_id for _, event_id in _seals()]
    assert order == [before.pk, *(e.pk for e in batch), after.pk]
    report = audit.verify_chain()
    assert report.ok and report.count == 52
    assert audit.record_many([]) == []


def _concurrent_appends(threads: int, per_thread: int, *, sealers: int) -> list[BaseException]:
    """``threads`` writers append while ``sealers`` threads seal, all at once; then a last seal."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads + sealers)
    writing = threading.Event()

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with transaction.atomic():
                    audit.record("test.concurrent", actor=f"writer-{n}", data={"i": i})
        except BaseException as exc:  # reported by the test, with the thread's error
            errors.append(exc)
        finally:
            connections.close_all()

    def sealer() -> None:
        try:
            start.wait()
            while not writing.is_set():
                audit.seal()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    sealer_threads = [threading.Thread(target=sealer) for _ in range(sealers)]
    for t in writers + sealer_threads:
        t.start()
    for t in writers:
        t.join()
    writing.set()
    for t in sealer_threads:
        t.join()
    audit.seal(wait=True)
    return errors


def _assert_one_unbroken_chain_of_every_entry(total: int) -> None:
    report = audit.verify_chain()
    assert report.ok, (report.broken_seq, report.reason, report.problems)
    assert (report.count, report.pending) == (total, 0)
    seals = _seals()
    assert [seq for seq, _ in seals] == list(range(1, total + 1))
    assert sorted(event_id for _, event_id in seals) == sorted(AuditEvent.objects.values_list("id", flat=True))


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_writers_and_two_sealers_leave_one_unbroken_chain_of_every_entry():
    threads, per_thread = 16, 250

    errors = _concurrent_appends(threads, per_thread, sealers=2)

    assert errors == []
    _assert_one_unbroken_chain_of_every_entry(threads * per_thread)


WRITER_SCRIPT = """
import os, sys
import django
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")
django.setup()
from django.db import transaction
from approvals import audit, audit_actions
audit_actions.ACTIONS["test.process"] = "written by the audit log's own tests"  # this process's registry
n, count = int(sys.argv[1]), int(sys.argv[2])
for i in range(count):
    with transaction.atomic():
        audit.record("test.process", actor=f"process-{n}", data={"i": i})
"""


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_four_writer_processes_and_a_sealer_leave_one_unbroken_chain_of_every_entry():
    processes, per_process = 4, 1000
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, str(n), str(per_process)],
            cwd=ROOT,
            env=process_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    while any(w.poll() is None for w in writers):
        audit.seal()

    assert [w.wait(60) for w in writers] == [0] * processes, [w.stderr.read()[-2000:] for w in writers]
    audit.seal(wait=True)
    _assert_one_unbroken_chain_of_every_entry(processes * per_process)


def _in_other_connection(work, ready: threading.Event, release: threading.Event, errors: list) -> threading.Thread:
    """Run ``work`` in a transaction on another connection, holding it open until ``release``."""

    def run() -> None:
        try:
            with transaction.atomic():
                work()
                ready.set()
                release.wait(30)
        except BaseException as exc:
            errors.append(exc)
            ready.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_appends_do_not_wait_for_each_other():
    ready, release, errors = threading.Event(), threading.Event(), []
    holder = _in_other_connection(lambda: audit.record("test.open", actor="slow"), ready, release, errors)
    ready.wait(10)
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")  # a lock wait would fail this append
            audit.record("test.quick", actor="fast")
    finally:
        release.set()
        holder.join(30)

    assert errors == []
    assert AuditEvent.objects.count() == 2


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_entry_that_commits_after_later_entries_were_sealed_is_sealed_once_after_them():
    ready, release, errors = threading.Event(), threading.Event(), []
    holder = _in_other_connection(lambda: audit.record("test.early", actor="slow"), ready, release, errors)
    ready.wait(10)
    try:
        later = _append(2)
        assert audit.seal().sealed == 2  # the early entry's transaction is still open: invisible
    finally:
        release.set()
        holder.join(30)
    early = AuditEvent.objects.get(action="test.early")
    assert early.pk < later[0].pk

    assert audit.seal().sealed == 1
    assert audit.seal().sealed == 0
    assert [event_id for _, event_id in _seals()] == [later[0].pk, later[1].pk, early.pk]
    assert audit.verify_chain().count == 3


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_sealer_that_finds_the_lease_taken_seals_nothing_and_says_so():
    _append(3)
    ready, release, errors = threading.Event(), threading.Event(), []

    def hold_lease() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [sealing.LEASE_KEY])

    holder = _in_other_connection(hold_lease, ready, release, errors)
    ready.wait(10)
    try:
        busy = audit.seal()
    finally:
        release.set()
        holder.join(30)

    assert (busy.busy, busy.sealed) == (True, 0)
    assert audit.seal().sealed == 3
    assert errors == []


@pytest.mark.django_db
def test_pending_counts_committed_entries_the_sealer_has_not_reached():
    _append(3)
    count, oldest = sealing.pending()
    assert count == 3 and oldest is not None

    audit.seal()

    assert sealing.pending() == (0, None)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_beat_and_a_worker_seal_committed_entries_within_seconds(celery_worker, tmp_path):
    from django_celery_beat.models import PeriodicTask

    from approvals import defaults

    defaults.install()  # the shipped beat entries (installing audits the default policy rules too)
    entry = PeriodicTask.objects.get(task="approvals.seal_audit")
    beat = start_beat(tmp_path)
    try:
        _append(5)
        total = AuditEvent.objects.count()
        wait_for(lambda: AuditSeal.objects.count() == total, timeout=30, what="beat's sealer", detail=beat.log)
    finally:
        beat.stop()

    assert (entry.interval.every, entry.interval.period, entry.queue) == (1, "seconds", "default")
    assert entry.expire_seconds  # a backlog after a worker outage expires instead of piling up
    report = audit.verify_chain()
    assert report.ok and report.count == total
