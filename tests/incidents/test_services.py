"""Intake service: normalize, fingerprint, dedupe, diagnose, audit, hand-off."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from approvals.models import AuditEvent
from grace_site import rows
from incidents import services
from incidents.choices import IncidentStatus, Source
from incidents.models import Incident
from incidents.services import Signal

pytestmark = pytest.mark.django_db


def wal_signal(**overrides) -> Signal:
    values = {
        "source": Source.SWEEP,
        "title": "orders-db WAL is large",
        "service": "orders-db",
        "labels": {"check": "sqlite_wal", "db_path": "/srv/orders.sqlite3", "wal_bytes": "99999999"},
        "fingerprint": "sweep-orders-wal",
    }
    return Signal(**{**values, **overrides})


def test_a_new_signal_opens_a_diagnosed_incident_and_hands_it_to_the_pipeline(
    default_rules, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        result = services.ingest(wal_signal(), actor="tester")

    incident = Incident.objects.get()
    assert result.created and result.incident.pk == incident.pk
    assert incident.status == IncidentStatus.OPEN
    assert incident.diagnosis_code == "database_wal_bloat"
    assert incident.diagnosis_evidence["rule_name"] == "sweep-sqlite-wal"
    assert incident.labels["db_path"] == "/srv/orders.sqlite3"
    assert published == [("remediation.start_run", [incident.pk])]
    event = AuditEvent.objects.get(action="incident.created")
    assert event.object_id == str(incident.pk) and event.actor == "tester"
    assert event.data["diagnosis"] == "database_wal_bloat"


def test_a_duplicate_of_an_active_incident_only_bumps_occurrences_and_last_seen(
    default_rules, published, django_capture_on_commit_callbacks
):
    first = services.ingest(wal_signal()).incident
    with django_capture_on_commit_callbacks(execute=True):
        second = services.ingest(wal_signal(title="a different title, same fingerprint"))

    assert not second.created
    incident = Incident.objects.get()
    assert incident.occurrences == 2
    assert incident.last_seen >= first.last_seen
    assert incident.title == "orders-db WAL is large"
    assert published == []  # no second run for a duplicate
    assert AuditEvent.objects.filter(action="incident.created").count() == 1


def test_the_fingerprint_is_computed_from_source_service_title_and_labels(default_rules):
    a = services.ingest(Signal(source="api", title="Checkout slow", service="shop", labels={"b": "2", "a": "1"}))
    b = services.ingest(Signal(source="api", title="Checkout slow", service="shop", labels={"a": "1", "b": "2"}))
    c = services.ingest(Signal(source="api", title="Checkout slow", service="cart", labels={"a": "1", "b": "2"}))

    assert a.incident.pk == b.incident.pk and not b.created
    assert c.created and c.incident.fingerprint != a.incident.fingerprint


def test_a_resolved_incident_does_not_absorb_a_new_signal(default_rules):
    first = services.ingest(wal_signal()).incident
    assert services.resolve(first.pk, reason="fixed")

    again = services.ingest(wal_signal())

    assert again.created and again.incident.pk != first.pk
    assert Incident.objects.filter(fingerprint="sweep-orders-wal").count() == 2


def test_a_batch_collapses_identical_signals_into_one_incident(default_rules):
    results = services.ingest_many([wal_signal() for _ in range(5)] + [wal_signal(fingerprint="other")])

    assert [r.created for r in results] == [True, False, False, False, False, True]
    assert Incident.objects.get(fingerprint="sweep-orders-wal").occurrences == 5


def test_an_invalid_signal_in_a_batch_writes_nothing(default_rules):
    with pytest.raises(ValidationError) as excinfo:
        services.ingest_many([wal_signal(), wal_signal(fingerprint="x", severity="apocalyptic")])

    assert "severity" in excinfo.value.message_dict
    assert Incident.objects.count() == 0
    assert not AuditEvent.objects.filter(action__startswith="incident.").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"source": "carrier-pigeon"}, "source"),
        ({"title": "  "}, "title"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
        ({"labels": {"big": "x" * 2000}}, "labels"),
        ({"labels": {"nested": {"a": 1}}}, "labels"),
        ({"fingerprint": "has spaces"}, "fingerprint"),
    ],
)
def test_bad_signals_are_refused_naming_the_field(overrides, field):
    with pytest.raises(ValidationError) as excinfo:
        services.ingest(wal_signal(**overrides))

    assert field in excinfo.value.message_dict


def test_an_unknown_diagnosis_is_escalated_to_humans_and_never_handed_to_the_pipeline(
    default_rules, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        result = services.ingest(Signal(source="api", title="Something odd happened"))

    assert result.incident.diagnosis_code == "unknown"
    assert result.incident.status == IncidentStatus.ESCALATED
    assert "human" in result.incident.status_reason
    assert published == []


def test_the_raw_payload_is_size_capped(default_rules, settings):
    settings.GRACE_INTAKE_RAW_MAX_BYTES = 1024

    incident = services.ingest(wal_signal(raw={"blob": "x" * 5000})).incident

    assert incident.raw_payload["truncated"] is True
    assert incident.raw_payload["bytes"] > 5000
    assert len(incident.raw_payload["preview"]) <= 1024


def test_resolve_is_audited_and_cancels_the_heal_after_commit(
    default_rules, published, django_capture_on_commit_callbacks
):
    incident = services.ingest(wal_signal()).incident

    with django_capture_on_commit_callbacks(execute=True):
        assert services.resolve(incident.pk, actor="ops", reason="alert resolved")
    assert not services.resolve(incident.pk, actor="ops", reason="again")

    incident.refresh_from_db()
    assert incident.status == IncidentStatus.RESOLVED and incident.resolved_at is not None
    assert incident.status_reason == "alert resolved"
    assert published == [("remediation.cancel_for_incident", [incident.pk])]
    event = AuditEvent.objects.get(action="incident.resolved")
    assert event.data == {"from": "open", "to": "resolved", "reason": "alert resolved"}


def test_set_status_is_a_compare_and_set_on_the_expected_statuses(default_rules):
    incident = services.ingest(wal_signal()).incident

    assert services.set_status(incident.pk, "healing", expected=("open",), reason="run 1 started")
    assert not services.set_status(incident.pk, "healing", expected=("open",), reason="run 2 started")
    assert not services.set_status(incident.pk, "escalated", expected=("open",))
    assert services.set_status(incident.pk, "escalated", expected=("healing",), reason="needs a human")

    incident.refresh_from_db()
    assert incident.status == "escalated"
    changes = AuditEvent.objects.filter(action="incident.status_changed").order_by("id")
    assert [(e.data["from"], e.data["to"]) for e in changes] == [("open", "healing"), ("healing", "escalated")]


def test_set_status_refuses_to_reopen_when_another_incident_holds_the_fingerprint(default_rules):
    old = services.ingest(wal_signal()).incident
    services.resolve(old.pk, reason="fixed")
    services.ingest(wal_signal())

    assert not services.set_status(old.pk, "open", reason="reopen")
    with pytest.raises(ValidationError):
        services.set_status(old.pk, "sleeping")


def test_intake_diagnoses_with_the_rules_its_transaction_sees_even_between_rechecks(settings):
    from incidents import diagnosis
    from incidents.models import DiagnosisRule

    settings.GRACE_DIAGNOSIS_RECHECK_SECONDS = 3600
    diagnosis.current_ruleset()  # cached: no rules yet
    DiagnosisRule.objects.create(name="wal", code="database_wal_bloat", label_equals={"check": "sqlite_wal"})

    incident = services.ingest(wal_signal()).incident

    assert incident.diagnosis_code == "database_wal_bloat"


def test_the_dedupe_lookup_searches_an_index_by_fingerprint_on_both_databases(default_rules):
    """Every alert looks up its channel's active incident: scanning the channel's incidents instead would make
    intake slower the more incidents a channel has ever had. On PostgreSQL the plan must not depend on the
    table's statistics: here 2,000 active incidents of the channel that no ANALYZE has seen (a new install, an
    alert storm since the last one), where ``fingerprint IN (...)`` was searched by channel alone."""
    incident = services.ingest(wal_signal()).incident
    fingerprints = [incident.fingerprint, "f" * 64]
    if connection.vendor == "postgresql":
        now = timezone.now()
        storm = [
            Incident(channel=incident.channel, fingerprint=f"{n:064x}", title="storm", first_seen=now, last_seen=now)
            for n in range(2000)
        ]
        rows.insert(Incident, storm, [f for f in Incident._meta.concrete_fields if not f.primary_key], connection)
        statuses = [str(status) for status in IncidentStatus.ACTIVE]
        with connection.cursor() as cursor:
            cursor.execute(
                "EXPLAIN ANALYZE " + services._ACTIVE_PG.format(lock=""),
                [sorted(fingerprints), incident.channel_id, statuses],
            )
            plan = "\n".join(line for (line,) in cursor.fetchall())
        conditions = [line for line in plan.splitlines() if "Index Cond" in line]
        assert conditions and all("fingerprint" in line for line in conditions), plan
        assert "Rows Removed by Filter" not in plan, plan
    else:
        plan = Incident.objects.filter(
            channel=incident.channel, fingerprint__in=fingerprints, status__in=IncidentStatus.ACTIVE
        ).explain()
        assert "fingerprint=?" in plan, plan
    assert services.active_of(incident.channel, fingerprints) == [incident]
    with transaction.atomic():
        assert services.active_of(incident.channel, fingerprints, lock=True) == [incident]
