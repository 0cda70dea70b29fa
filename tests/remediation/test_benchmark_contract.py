"""A contract can require "no regression on a benchmark suite" after the action."""

import pytest

from incidents.services import Signal, ingest
from learning.models import BenchmarkRun, BenchmarkSuite
from remediation.choices import RunStatus
from remediation.models import ContractResult
from tests.remediation.conftest import checkpoint_steps, make_playbook
from tests.support import inventory
from tests.support.runs import bloated_wal_db, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_contract_runs_the_benchmark_suite_and_records_its_verdict(
    celery_worker, live_server, allowed_root, wal_rule
):
    BenchmarkSuite.objects.create(
        name="post-heal",
        checks=[
            {"kind": "database", "params": {}},
            {"kind": "redis", "params": {}},
            {"kind": "http", "params": {"url": f"{live_server.url}/admin/login/"}},
        ],
    )
    contract = [
        {"field": "wal_bytes", "op": "<=", "value": 1048576},
        {"field": "benchmark.post-heal.passed", "op": "==", "value": True},
    ]
    make_playbook("wal-then-bench", "database_wal_bloat", checkpoint_steps(contract=contract))
    db = allowed_root / "bench.sqlite3"
    keeper = bloated_wal_db(db, rows=1500)

    inventory.resource("b", "sqlite", db)
    incident = ingest(Signal(source="api", title="bench WAL", service="b")).incident
    run = wait_for_run(incident.pk)

    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    verdict = ContractResult.objects.get(run=run, field="benchmark.post-heal.passed")
    assert verdict.passed and verdict.actual is True
    assert BenchmarkRun.objects.filter(suite__name="post-heal", trigger="contract").count() == 1
    keeper.close()


def test_a_failing_benchmark_fails_the_contract_and_rolls_back(celery_worker, allowed_root, wal_rule):
    BenchmarkSuite.objects.create(
        name="post-heal-broken",
        checks=[{"kind": "http", "params": {"url": "http://127.0.0.1:9/nothing-listens-here"}}],
    )
    contract = [{"field": "benchmark.post-heal-broken.passed", "op": "==", "value": True}]
    make_playbook("wal-then-broken-bench", "database_wal_bloat", checkpoint_steps(contract=contract))
    db = allowed_root / "broken.sqlite3"
    keeper = bloated_wal_db(db, rows=300)

    inventory.resource("c", "sqlite", db)
    incident = ingest(Signal(source="api", title="broken WAL", service="c")).incident
    run = wait_for_run(incident.pk)

    assert run.status == RunStatus.ROLLED_BACK, run.status_reason
    assert "benchmark.post-heal-broken.passed" in run.events.get(to_status="ROLLING_BACK").note
    keeper.close()


def test_a_benchmark_predicate_is_evaluated_once_after_the_polled_ones_hold(celery_worker, allowed_root, wal_rule):
    """Polling a contract re-observes the action's facts; the benchmark suite is never run on every poll, and
    not at all when the action's own predicates never held."""
    BenchmarkSuite.objects.create(name="post-heal-once", checks=[{"kind": "redis", "params": {}}])
    contract = [
        {"field": "wal_bytes", "op": "<", "value": 0, "within": 2},  # can never hold: polled for 2 s
        {"field": "benchmark.post-heal-once.passed", "op": "==", "value": True},
    ]
    make_playbook("wal-never", "database_wal_bloat", checkpoint_steps(contract=contract))
    db = allowed_root / "once.sqlite3"
    keeper = bloated_wal_db(db, rows=200)
    inventory.resource("once", "sqlite", db)

    run = wait_for_run(ingest(Signal(source="api", title="once WAL", service="once")).incident.pk)

    assert run.status == RunStatus.ROLLED_BACK, run.status_reason
    assert not BenchmarkRun.objects.filter(suite__name="post-heal-once").exists()
    verdict = ContractResult.objects.get(run=run, field="benchmark.post-heal-once.passed")
    assert not verdict.passed and "not run" in verdict.detail
    keeper.close()
