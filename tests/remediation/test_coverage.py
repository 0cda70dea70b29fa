"""Every shipped diagnosis does something useful: a remedy that fits the service's inventory, or an escalation
with the evidence a person needs. Planning runs in the test process (no worker: nothing executes here)."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.exceptions import ValidationError

from incidents.choices import KNOWN_DIAGNOSES
from incidents.models import Incident
from learning import benchmarks
from learning.models import BenchmarkResult, BenchmarkRun, BenchmarkSuite
from remediation import defaults, pipeline
from remediation.choices import RunStatus
from remediation.defaults import default_playbooks
from remediation.evidence import COLLECTORS
from remediation.models import HealRun, Playbook
from remediation.planner import required_inputs, validate_steps
from tests.support import inventory

pytestmark = pytest.mark.django_db
S = RunStatus


def _incident(service: str, code: str, labels: dict | None = None, title: str = "t") -> Incident:
    return Incident.objects.create(
        fingerprint=uuid.uuid4().hex,
        source="api",
        service=service,
        title=title,
        labels=labels or {},
        diagnosis_code=code,
        diagnosis_confidence=0.9,
        first_seen="2026-01-01T00:00Z",
        last_seen="2026-01-01T00:00Z",
    )


def _planned(incident: Incident) -> HealRun:
    """Start the run and plan it here (the hand-offs to workers are never sent: nothing commits)."""
    run = pipeline.start_run(incident.pk)
    pipeline.plan(run.pk)
    return HealRun.objects.select_related("playbook").get(pk=run.pk)


def test_every_shipped_diagnosis_has_a_shipped_playbook():
    shipped = default_playbooks()
    covered = {code for spec in shipped for code in spec["diagnosis_codes"]}

    assert set(KNOWN_DIAGNOSES) <= covered, sorted(set(KNOWN_DIAGNOSES) - covered)


@pytest.mark.parametrize("spec", default_playbooks(), ids=lambda spec: spec["name"])
def test_every_shipped_playbook_is_valid_for_what_it_is(spec):
    validate_steps(spec["steps"], escalate_only=spec.get("escalate_only", False))
    needs = required_inputs(spec["steps"])
    assert len(needs) == len(spec["steps"])
    if spec.get("escalate_only") and spec["steps"]:
        assert all(n["evidence"] in COLLECTORS for n in needs)


@pytest.mark.parametrize(
    ("steps", "escalate_only", "error"),
    [
        ([{"action": "sqlite.checkpoint"}], True, "may only gather evidence"),
        ([{"evidence": "host.top_processes"}], False, "belong to escalate-only playbooks"),
        ([{"evidence": "host.read_mind"}], True, "unknown evidence 'host.read_mind'"),
        ([{"evidence": "host.top_processes", "params": {"limit": 1000}}], True, "invalid parameters"),
        ([{"evidence": "host.top_processes", "path": "/etc"}], True, "unknown key 'path'"),
    ],
)
def test_evidence_steps_belong_to_escalate_only_playbooks_and_are_checked(steps, escalate_only, error):
    with pytest.raises(ValidationError) as excinfo:
        validate_steps(steps, escalate_only=escalate_only)

    assert error in str(excinfo.value.detail)


def test_database_locked_on_a_sqlite_service_plans_the_sqlite_remedy_not_the_postgresql_one(allowed_root):
    defaults.install()
    inventory.resource("shop", "sqlite", allowed_root / "shop.sqlite3", name="db")
    inventory.resource("ledger", "postgres", "ledger", name="db")

    sqlite_run = _planned(_incident("shop", "database_locked"))
    postgres_run = _planned(_incident("ledger", "database_locked"))

    assert (sqlite_run.status, sqlite_run.playbook.name) == (S.PLANNED, "sqlite-locked-wal-mode")
    assert sqlite_run.plan["steps"][0]["params"]["path"] == str(allowed_root / "shop.sqlite3")
    assert (postgres_run.status, postgres_run.playbook.name) == (S.PLANNED, "postgres-terminate-blockers")


def test_a_service_without_the_resource_a_remedy_needs_escalates_saying_what_to_add(allowed_root):
    defaults.install()
    inventory.resource("web", "http", "http://127.0.0.1:8000/api/health/", name="health")

    run = _planned(_incident("web", "database_locked"))

    assert run.status == S.ESCALATED
    assert "no playbook for database_locked fits service web" in run.status_reason
    assert "postgres-terminate-blockers needs a postgres resource" in run.status_reason
    assert "add the resource to the inventory" in run.status_reason
    missing = run.events.get(to_status=S.ESCALATED).data["missing_resources"]
    assert {m["kind"] for m in missing} == {"postgres", "sqlite"}


def test_disk_pressure_clears_only_a_declared_cache_and_otherwise_escalates_with_the_disks(allowed_root):
    defaults.install()
    inventory.resource("api", "cache", allowed_root / "cache", name="cache")
    inventory.resource("batch", "http", "http://127.0.0.1:8000/api/health/", name="health")

    with_cache = _planned(_incident("api", "disk_pressure"))
    without = _planned(_incident("batch", "disk_pressure"))

    assert (with_cache.status, with_cache.playbook.name) == (S.PLANNED, "disk-pressure-clear-caches")
    assert with_cache.plan["steps"][0]["params"] == {"path": str(allowed_root / "cache"), "allow_unsnapshotted": True}
    assert (without.status, without.playbook.name) == (S.ESCALATED, "disk-pressure-evidence")
    [found] = without.events.get(to_status=S.ESCALATED).data["evidence"]
    assert found["evidence"] == "host.disk_usage" and found["facts"]["mounts"]
    assert "declares no cache resource" in without.status_reason


@pytest.mark.parametrize(("code", "sort_by"), [("high_cpu", "cpu"), ("memory_pressure", "memory")])
def test_cpu_and_memory_pressure_escalate_with_the_busiest_processes(code, sort_by):
    defaults.install()
    inventory.service("grace")

    run = _planned(_incident("grace", code))

    assert run.status == S.ESCALATED and run.playbook.escalate_only
    assert not run.attempts.exists()
    [found] = run.events.get(to_status=S.ESCALATED).data["evidence"]
    assert found["facts"]["sorted_by"] == sort_by
    assert found["facts"]["processes"] and all("pid" in p and "command" in p for p in found["facts"]["processes"])
    assert f"top processes by {sort_by}" in run.status_reason


def test_a_latency_spike_escalates_with_the_endpoint_latency_of_the_inventory_resource(settings):
    defaults.install()
    url = f"http://127.0.0.1:{settings.GRACE_PROBE_LOOPBACK_PORTS[0]}/nothing-listens"  # refused: nothing listens
    inventory.resource("grace", "http", url, name="health")

    run = _planned(_incident("grace", "latency_spike", labels={"url": "http://169.254.169.254/"}))

    assert run.status == S.ESCALATED
    http, top = run.events.get(to_status=S.ESCALATED).data["evidence"]
    assert http["facts"]["url"] == url  # the inventory's, never the label's
    assert http["facts"]["statuses"] == ["None"] and len(http["facts"]["samples"]) == 5
    assert top["evidence"] == "host.top_processes"


def test_a_benchmark_regression_escalates_with_the_metrics_history():
    defaults.install()
    inventory.service("grace")
    suite = BenchmarkSuite.objects.create(name="smoke-test", checks=[{"kind": "redis", "params": {}}])
    for value in (1.0, 1.1, 9.0):
        run = BenchmarkRun.objects.create(suite=suite, status="passed")
        BenchmarkResult.objects.create(
            run=run,
            suite=suite,
            check_kind="redis",
            metric="redis.roundtrip_ms",
            unit="ms",
            ok=True,
            value=value,
            baseline_median=1.0,
            threshold=6.0,
        )

    run = _planned(_incident("grace", "benchmark_regression", {"suite": "smoke-test", "metric": "redis.roundtrip_ms"}))

    history = run.events.get(to_status=S.ESCALATED).data["evidence"][0]
    assert history["evidence"] == "benchmark.history"
    assert [r["value"] for r in history["facts"]["results"]] == [9.0, 1.1, 1.0]
    assert [r["over_threshold"] for r in history["facts"]["results"]] == [True, False, False]
    assert "over the threshold in 1 of the last 3 runs" in run.status_reason
    assert benchmarks.history("smoke-test", "nothing") == []


def test_get_playbooks_lists_what_each_needs_from_the_inventory(api_client, admin_user):
    defaults.install()
    api_client.force_authenticate(admin_user)

    rows = {p["name"]: p for p in api_client.get("/api/playbooks/", {"limit": 100}).json()["results"]}

    assert rows["sqlite-locked-wal-mode"]["required_inputs"] == [
        {
            "step": 0,
            "action": "sqlite.enable_wal",
            "resource_kind": "sqlite",
            "resource_label": "resource",
            "labels": [],
        }
    ]
    assert rows["k8s-pod-crashloop"]["required_inputs"][0]["labels"] == ["pod"]
    assert rows["benchmark-regression-evidence"]["required_inputs"][0] == {
        "step": 0,
        "evidence": "benchmark.history",
        "resource_kind": "",
        "resource_label": "",
        "labels": ["suite", "metric"],
    }


def test_an_escalate_only_playbook_with_an_action_step_is_refused_by_the_api(api_client, admin_user):
    api_client.force_authenticate(admin_user)

    response = api_client.post(
        "/api/playbooks/",
        {
            "name": "sneaky",
            "diagnosis_codes": ["high_cpu"],
            "escalate_only": True,
            "steps": [{"action": "service.restart"}],
        },
        format="json",
    )

    assert response.status_code == 400
    assert "may only gather evidence" in str(response.json())
    assert not Playbook.objects.filter(name="sneaky").exists()
