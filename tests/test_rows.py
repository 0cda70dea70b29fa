"""grace_site.rows: values prepared the short way are the values the ORM's own preparation gives, on this
test run's backend (SQLite or PostgreSQL), for the rows intake writes with plain SQL."""

import warnings
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection

from approvals.models import AuditEvent
from grace_site import rows
from incidents.choices import IncidentStatus, Severity
from incidents.models import Channel, Incident

pytestmark = pytest.mark.django_db

STAMPS = {"created_at", "updated_at"}


def comparable(value):
    """The value with its type (1 and 1.0 are equal in Python, not in a column); psycopg's Jsonb wrapper has no
    equality: what it wraps."""
    if hasattr(value, "obj") and hasattr(value, "dumps"):
        return (type(value).__name__, value.obj)
    return (type(value).__name__, value)


def orm(instance, fields):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a naive datetime: the ORM warns, then stores it
        return [comparable(f.get_db_prep_save(f.pre_save(instance, True), connection)) for f in fields]


def short(instances, fields):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [comparable(value) for value in rows.params(instances, fields, connection)]


def incident(**overrides) -> Incident:
    values = {
        "fingerprint": "f" * 64,
        "channel": Channel.objects.get(name="alertmanager"),
        "source": "alertmanager",
        "service": "orders-db",
        "environment": "production",
        "claimed_environment": "",
        "severity": Severity.CRITICAL,  # a TextChoices member, as intake passes it
        "title": "orders-db locked ✓",
        "message": "",
        "labels": {"alertname": "DatabaseLocked", "nested": {"a": [1, 2.5, None, True]}},
        "first_seen": datetime(2026, 12, 7, 4, 30, 1, 123456, tzinfo=UTC),
        "last_seen": datetime(2026, 12, 7, 6, 30, tzinfo=timezone(timedelta(hours=2))),  # another offset
        "occurrences": 3,
        "status": IncidentStatus.OPEN,
        "diagnosis_code": "database_locked",
        "diagnosis_confidence": 0.9,
        "diagnosis_evidence": {"rule": "x"},
        "raw_payload": {},
    }
    return Incident(**{**values, **overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"diagnosis_confidence": 1},  # an int in a float column: the ORM stores 1.0
        {"occurrences": True},  # a bool in an integer column: the ORM stores 1
        {"labels": ["a", "list"], "raw_payload": "a string", "diagnosis_evidence": 7},
        {"first_seen": datetime(2026, 12, 7, 4, 30)},  # naive: the ORM's own path (warns, then makes it aware)
        {"title": Decimal("1.5")},  # not a str: the field's own preparation
        {"resolved_at": datetime(2026, 12, 7, 5, 0, tzinfo=UTC), "latest_run_id": 41, "raised_by_id": None},
    ],
)
def test_incident_values_match_the_orms_preparation(overrides):
    fields = [f for f in Incident._meta.concrete_fields if not f.primary_key]
    plain = [f for f in fields if f.attname not in STAMPS]
    item = incident(**overrides)

    assert short([item], plain) == orm(item, plain)


def test_stamps_are_set_on_the_instance_and_stored_as_set():
    fields = [f for f in Incident._meta.concrete_fields if f.attname in STAMPS]
    item = incident()
    before = datetime.now(UTC)

    values = short([item], fields)

    assert before <= item.created_at <= datetime.now(UTC)
    assert before <= item.updated_at <= datetime.now(UTC)
    assert values == [comparable(f.get_db_prep_save(getattr(item, f.attname), connection)) for f in fields]


def test_audit_rows_match_and_rows_follow_one_another():
    names = ("at", "actor", "action", "object_type", "object_id", "data")
    fields = [AuditEvent._meta.get_field(name) for name in names]
    events = [
        AuditEvent(
            at=datetime(2026, 12, 7, 4, 30, tzinfo=UTC),
            actor=f"channel:{n}",
            action="incident.created",
            object_type="incidents.incident",
            object_id=str(n),
            data={"n": n, "text": "é\u2028"},
        )
        for n in range(3)
    ]

    assert short(events, fields) == [value for event in events for value in orm(event, fields)]


def test_what_is_written_reads_back_as_the_orm_would_store_it():
    """End to end: an incident inserted by intake's plain SQL reads back equal to one saved by the ORM."""
    from incidents.services import _insert

    mine, theirs = incident(fingerprint="a" * 64), incident(fingerprint="b" * 64)
    _insert([mine])
    theirs.save()

    def stored(pk):
        row = Incident.objects.filter(pk=pk).values().get()
        return {k: v for k, v in row.items() if k not in {"id", "fingerprint", *STAMPS}}

    assert stored(mine.pk) == stored(theirs.pk)


TRICKY = ["", "NULL", "null", 'a "quoted" {braced, listed} \\ back\\slash', "é\u2028✓", " padded ", "{}", "'"]


def test_insert_stores_many_rows_in_order_with_their_values_and_sets_their_ids():
    """``rows.insert`` (COPY on PostgreSQL, VALUES on SQLite): every row comes back as given, in order, ids
    set on the instances, text that array literals treat specially included."""
    fields = [f for f in Incident._meta.concrete_fields if not f.primary_key]
    items = [
        incident(
            fingerprint=f"{n:064d}",
            title=TRICKY[n % len(TRICKY)],
            message=TRICKY[(n + 1) % len(TRICKY)],
            labels={"n": n, "text": TRICKY[n % len(TRICKY)], "list": [None, True, 1.5]},
            latest_run_id=None,
            resolved_at=None if n % 2 else datetime(2026, 12, 7, 5, n % 60, tzinfo=UTC),
        )
        for n in range(450)  # more than one VALUES statement's worth on SQLite
    ]

    rows.insert(Incident, items, fields, connection)

    ids = [item.pk for item in items]
    assert all(isinstance(pk, int) for pk in ids) and ids == sorted(ids) and len(set(ids)) == len(ids)
    assert not any(item._state.adding for item in items)
    stored = {row["id"]: row for row in Incident.objects.filter(pk__in=ids).values()}
    for n, item in enumerate(items):
        row = stored[item.pk]
        assert row["fingerprint"] == f"{n:064d}"
        assert (row["severity"], row["status"]) == ("critical", "open")  # choices stored by value
        assert row["title"] == TRICKY[n % len(TRICKY)]
        assert row["message"] == TRICKY[(n + 1) % len(TRICKY)]
        assert row["labels"] == {"n": n, "text": TRICKY[n % len(TRICKY)], "list": [None, True, 1.5]}
        assert row["resolved_at"] == item.resolved_at
        assert row["first_seen"] == item.first_seen


@pytest.mark.parametrize("count", [1, rows.COPY_FROM_ROWS + 3])  # a VALUES statement, COPY on PostgreSQL
def test_insert_never_cuts_an_overlong_value_short(count):
    """A value longer than its column is refused (PostgreSQL) or kept whole (SQLite keeps any length), and
    nothing of the batch is stored on refusal."""
    from django.db import DataError, transaction

    fields = [f for f in Incident._meta.concrete_fields if not f.primary_key]
    items = [incident(fingerprint=f"{n:064d}") for n in range(count)]
    items[-1].severity = "x" * 11
    try:
        with transaction.atomic():
            rows.insert(Incident, items, fields, connection)
    except DataError:
        assert connection.vendor == "postgresql"
        assert not Incident.objects.filter(fingerprint__in=[item.fingerprint for item in items]).exists()
    else:
        assert connection.vendor == "sqlite"
        assert Incident.objects.get(pk=items[-1].pk).severity == "x" * 11  # severity is varchar(10)


def test_insert_of_nothing_writes_nothing():
    before = Incident.objects.count()
    rows.insert(Incident, [], [Incident._meta.get_field("fingerprint")], connection)
    assert Incident.objects.count() == before
