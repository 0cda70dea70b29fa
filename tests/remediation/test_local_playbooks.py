"""The shipped local playbooks and the local action registrations are coherent."""

import re

import pytest

from remediation.actions import load_all
from remediation.actions.local_playbooks import PLAYBOOKS
from remediation.contracts import validate_contract
from remediation.planner import validate_steps

REGISTRY = load_all()
LOCAL = [a for a in REGISTRY.all() if a.family == "local"]
# An example inventory resource of each kind the local playbooks bind to.
EXAMPLE_RESOURCES = {
    "sqlite": {"target": "/srv/managed/orders.sqlite3"},
    "postgres": {"target": "orders"},
    "cache": {"target": "/srv/managed/cache"},
    "service": {"target": "orders-api"},
}


def test_every_local_action_is_registered():
    assert {a.name for a in LOCAL} == {
        "sqlite.checkpoint",
        "sqlite.integrity_check",
        "sqlite.vacuum",
        "sqlite.analyze",
        "sqlite.enable_wal",
        "postgres.terminate_blockers",
        "postgres.cancel_long_queries",
        "postgres.vacuum_analyze",
        "cache.clear",
        "service.set_log_level",
        "service.restart",
        "http.probe",
    }


@pytest.mark.parametrize("action", LOCAL, ids=lambda a: a.name)
def test_each_local_action_declares_what_the_pipeline_needs(action):
    assert action.tier in (1, 2, 3)
    assert action.timeout > 0
    assert action.target_param in action.params().fields
    assert (action.snapshot is None) == (action.rollback is None)
    validate_contract(action.default_contract)


def test_actions_that_change_files_can_be_rolled_back():
    reversible = {a.name for a in LOCAL if a.reversible}

    assert reversible == {
        "sqlite.checkpoint",
        "sqlite.enable_wal",
        "sqlite.vacuum",
        "sqlite.analyze",
        "cache.clear",
        "service.set_log_level",
    }


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p["name"])
def test_each_playbook_binds_every_step_to_an_inventory_resource(playbook):
    assert re.fullmatch(r"[a-z0-9-]+", playbook["name"])
    assert playbook["tier"] in (1, 2, 3)
    assert playbook["cooldown_seconds"] > 0
    assert playbook["diagnosis_codes"]
    validate_steps(playbook["steps"])
    for step in playbook["steps"]:
        action = REGISTRY.get(step["action"])
        assert not set(step.get("params", {})) & set(action.binds), "a target parameter is set by the step"
        params = action.validate({**step.get("params", {}), **action.bind(EXAMPLE_RESOURCES[action.resource_kind])})
        validate_contract(step["contract"])
        assert all(p["field"] in observed_fields(action.name) for p in step["contract"])
        assert action.target(params)


def observed_fields(name: str) -> set[str]:
    """The facts each action's observe reports (kept next to the playbooks they check)."""
    return {
        "sqlite.checkpoint": {"wal_bytes", "db_bytes", "integrity", "busy", "page_count", "freelist_count", "exists"},
        "sqlite.enable_wal": {"journal_mode", "busy", "wal_bytes", "integrity", "exists"},
        "postgres.terminate_blockers": {"blocked_sessions", "longest_block_seconds", "sessions_blocked_over_threshold"},
        "cache.clear": {"exists", "file_count", "bytes"},
        "service.restart": {"running", "pid", "started_at", "log_level"},
    }[name]


def test_the_playbooks_cover_every_default_diagnosis_with_a_local_remedy():
    covered = {code for p in PLAYBOOKS for code in p["diagnosis_codes"]}

    assert covered == {
        "database_wal_bloat",
        "database_locked",
        "cache_corruption",
        "service_down",
        "error_rate_spike",
        "disk_pressure",
    }
    assert len({p["name"] for p in PLAYBOOKS}) == len(PLAYBOOKS)


def test_the_wal_playbook_checks_the_wal_size_within_ten_seconds():
    (playbook,) = [p for p in PLAYBOOKS if "database_wal_bloat" in p["diagnosis_codes"]]

    assert playbook["steps"] == [
        {
            "action": "sqlite.checkpoint",
            "contract": [{"field": "wal_bytes", "op": "<=", "value": 1048576, "within": 10}],
        }
    ]
