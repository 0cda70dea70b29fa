"""Outcome records and playbook statistics: exact under concurrency, idempotent, audited."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from approvals import audit
from approvals.models import AuditEvent
from learning import services
from learning.models import OutcomeRecord, PlaybookStatistics
from tests.learning.factories import make_run, outcome_kwargs


def _in_threads(calls: list) -> list[BaseException]:
    """Run each call in its own real thread (own DB connection), all released at once."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def worker(call):
        try:
            barrier.wait(timeout=30)
            call()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_finishing_runs_leave_exact_counts():
    outcomes = ["succeeded"] * 7 + ["failed"] * 3 + ["rolled_back"] * 2
    runs = [make_run() for _ in outcomes]
    calls = [
        (
            lambda run=run, outcome=outcome, i=i: services.record_outcome(
                **outcome_kwargs(run, outcome=outcome, seconds=i + 1)
            )
        )
        for i, (run, outcome) in enumerate(zip(runs, outcomes, strict=True))
    ]

    errors = _in_threads(calls)

    assert errors == []
    stats = PlaybookStatistics.objects.get(diagnosis_code="sqlite_wal_bloat", playbook="wal-checkpoint")
    assert (stats.attempts, stats.successes, stats.failures, stats.rollbacks) == (12, 7, 3, 2)
    assert stats.duration_count == 12
    assert stats.duration_sum == pytest.approx(sum(range(1, 13)))
    assert (stats.duration_min, stats.duration_max) == (pytest.approx(1.0), pytest.approx(12.0))
    assert OutcomeRecord.objects.count() == 12
    assert AuditEvent.objects.filter(action="learning.outcome_recorded").count() == 12
    assert audit.verify_chain().ok


@pytest.mark.django_db(transaction=True)
def test_a_redelivered_outcome_is_recorded_once_even_when_racing():
    run = make_run()
    kwargs = outcome_kwargs(run)

    errors = _in_threads([lambda: services.record_outcome(**kwargs) for _ in range(4)])

    assert errors == []
    assert OutcomeRecord.objects.filter(run=run).count() == 1
    assert PlaybookStatistics.objects.get().attempts == 1
    assert AuditEvent.objects.filter(action="learning.outcome_recorded").count() == 1


@pytest.mark.django_db
def test_only_outcomes_about_the_playbook_are_counted():
    for outcome in ["escalated", "rejected", "expired", "blocked", "cancelled"]:
        services.record_outcome(**outcome_kwargs(make_run(), outcome=outcome))
    services.record_outcome(**outcome_kwargs(make_run(), outcome="succeeded", shadow=True))

    assert OutcomeRecord.objects.count() == 6
    assert not OutcomeRecord.objects.filter(counted=True).exists()
    assert not PlaybookStatistics.objects.exists()


@pytest.mark.django_db
def test_consecutive_failures_count_since_the_last_success_and_the_last_outcome_is_the_latest():
    now = timezone.now()
    sequence = ["failed", "succeeded", "failed", "rolled_back", "failed"]
    for i, outcome in enumerate(sequence):
        services.record_outcome(**outcome_kwargs(make_run(), outcome=outcome, finished_at=now + timedelta(seconds=i)))
    # A late report of an older run does not become the "last outcome".
    services.record_outcome(**outcome_kwargs(make_run(), outcome="failed", finished_at=now - timedelta(hours=1)))

    assert services.consecutive_failures("sqlite_wal_bloat", "wal-checkpoint") == 4
    stats = PlaybookStatistics.objects.get()
    assert stats.last_outcome == "failed"
    assert stats.last_outcome_at == now + timedelta(seconds=4)
    assert services.consecutive_failures("sqlite_wal_bloat", "never-ran") == 0


@pytest.mark.django_db
def test_bad_outcome_input_names_the_field():
    run = make_run()
    with pytest.raises(ValidationError) as excinfo:
        services.record_outcome(**outcome_kwargs(run, outcome="exploded"))
    assert "outcome" in excinfo.value.message_dict

    kwargs = outcome_kwargs(run)
    kwargs["finished_at"] = kwargs["started_at"] - timedelta(seconds=1)
    with pytest.raises(ValidationError) as excinfo:
        services.record_outcome(**kwargs)
    assert "finished_at" in excinfo.value.message_dict
    assert not OutcomeRecord.objects.exists()


@pytest.mark.django_db
def test_the_rebuild_command_recomputes_statistics_from_outcomes():
    for i, outcome in enumerate(["succeeded", "succeeded", "rolled_back"]):
        services.record_outcome(**outcome_kwargs(make_run(), outcome=outcome, seconds=10 * (i + 1)))
    expected = PlaybookStatistics.objects.values().get()
    PlaybookStatistics.objects.update(attempts=99, successes=99, failures=0, rollbacks=0)

    call_command("rebuild_playbook_stats", stdout=open("/dev/null", "w"))  # noqa: SIM115

    rebuilt = PlaybookStatistics.objects.values().get()
    for key in ("attempts", "successes", "failures", "rollbacks", "duration_sum", "duration_min", "duration_max"):
        assert rebuilt[key] == expected[key], key
    assert rebuilt["consecutive_failures"] == 1
    assert AuditEvent.objects.filter(action="learning.statistics_rebuilt").exists()


@pytest.mark.django_db
def test_outcome_records_store_stage_durations_contract_results_and_time_to_resolve():
    run = make_run()
    record = services.record_outcome(**outcome_kwargs(run, seconds=30))

    assert record.stage_durations["plan"] == 0.1
    assert record.contract_results[0]["field"] == "wal_bytes"
    assert record.duration_seconds == pytest.approx(30)
    expected = (record.finished_at - run.incident.first_seen).total_seconds()
    assert record.resolve_seconds == pytest.approx(expected)


@pytest.mark.django_db
def test_simulated_runs_are_recorded_but_not_counted():
    record = services.record_outcome(**outcome_kwargs(make_run(), outcome="simulated", shadow=True))

    assert record.outcome == "simulated" and not record.counted
    assert not PlaybookStatistics.objects.exists()
