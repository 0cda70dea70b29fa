"""Policy evaluation: tier raises with reasons, rule precedence, blackouts and hourly budgets."""

from dataclasses import replace
from datetime import UTC, datetime, time

import pytest
from django_celery_beat.models import PeriodicTask

from approvals import defaults, policy
from approvals.models import GovernanceSettings, PolicyRule
from tests.support.race import run_together

pytestmark = pytest.mark.django_db

FACTS = policy.PlanFacts(
    actions=["sqlite.checkpoint"],
    families=["local"],
    environment="staging",
    service="orders-db",
    diagnosis_code="sqlite_wal_bloat",
    target="/srv/orders.sqlite3",
    declared_tier=1,
    confidence=0.9,
    confidence_threshold=0.6,
    recent_failures=0,
    blast_radius=1,
)
# A Wednesday, 14:30 UTC (15:30 in Paris).
WEDNESDAY = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def _rule(name, effect, **fields):
    return PolicyRule.objects.create(name=name, effect=effect, **fields)


def test_a_quiet_staging_plan_keeps_its_declared_tier():
    decision = policy.evaluate(FACTS, now=WEDNESDAY)

    assert (decision.allowed, decision.tier, decision.reasons) == (True, 1, [])
    assert {e["rule"] for e in decision.explanation} >= {"builtin:production", "builtin:confidence"}
    assert not any(e["matched"] for e in decision.explanation)


def test_production_raises_the_tier_with_its_reason():
    decision = policy.evaluate(replace(FACTS, environment="production"), now=WEDNESDAY)

    assert decision.tier == 2
    assert decision.reasons == ["tier 1 -> 2: production environment 'production'"]


def test_low_confidence_and_recent_failures_raise_to_two_and_blast_radius_to_three():
    low = policy.evaluate(replace(FACTS, confidence=0.3), now=WEDNESDAY)
    failing = policy.evaluate(replace(FACTS, recent_failures=2), now=WEDNESDAY)
    wide = policy.evaluate(replace(FACTS, blast_radius=5), now=WEDNESDAY)
    unknown = policy.evaluate(replace(FACTS, confidence=None), now=WEDNESDAY)

    assert (low.tier, failing.tier, wide.tier, unknown.tier) == (2, 2, 3, 1)
    assert "confidence 0.30 under threshold 0.60" in low.reasons[0]
    assert "2 recent failure(s)" in failing.reasons[0]
    assert "blast radius 5 above 3" in wide.reasons[0]


def test_a_declared_tier_is_never_lowered():
    decision = policy.evaluate(replace(FACTS, declared_tier=3, environment="production"), now=WEDNESDAY)

    assert decision.tier == 3
    assert decision.reasons == []


def test_a_require_tier_rule_raises_and_explains_why_it_matched():
    _rule("orders-two-person", "require_tier", tier=3, match_services=["orders-*"], match_families=["local"])
    _rule("payments-only", "require_tier", tier=3, match_services=["payments-*"])

    decision = policy.evaluate(FACTS, now=WEDNESDAY)

    assert decision.tier == 3
    assert decision.reasons == [
        "tier 1 -> 3: rule orders-two-person: family local in ['local']; service orders-db in ['orders-*']"
    ]
    explained = {e["rule"]: e for e in decision.explanation}
    assert explained["orders-two-person"]["matched"] is True
    assert explained["payments-only"] == {
        "rule": "payments-only",
        "matched": False,
        "why": "service orders-db not in ['payments-*']",
        "effect": "require_tier 3",
    }


def test_a_deny_rule_blocks_and_names_itself():
    _rule("no-checkpoints", "deny", match_actions=["sqlite.*"])

    decision = policy.evaluate(FACTS, now=WEDNESDAY)

    assert decision.allowed is False
    assert decision.blocked_reason == "denied by rule no-checkpoints: action sqlite.checkpoint in ['sqlite.*']"


def test_the_first_allow_or_deny_by_priority_decides():
    _rule("deny-all-local", "deny", priority=100, match_families=["local"])
    _rule("allow-staging", "allow", priority=10, match_environments=["staging"])

    staging = policy.evaluate(FACTS, now=WEDNESDAY)
    production = policy.evaluate(replace(FACTS, environment="production"), now=WEDNESDAY)

    assert staging.allowed is True
    assert (
        "overridden by earlier rule allow-staging"
        in {e["rule"]: e for e in staging.explanation}["deny-all-local"]["why"]
    )
    assert production.allowed is False


def test_deny_wins_over_allow_at_equal_priority():
    _rule("a-allow", "allow", priority=50)
    _rule("z-deny", "deny", priority=50)

    assert policy.evaluate(FACTS, now=WEDNESDAY).allowed is False


def test_a_blackout_blocks_inside_its_window_in_its_time_zone():
    _rule(
        "wednesday-afternoon-freeze",
        "deny",
        window_weekdays=[2],
        window_start=time(15, 0),
        window_end=time(16, 0),
        window_timezone="Europe/Paris",
    )

    inside = policy.evaluate(FACTS, now=WEDNESDAY)  # 15:30 in Paris
    outside = policy.evaluate(FACTS, now=WEDNESDAY.replace(hour=16))  # 17:00 in Paris

    assert inside.allowed is False
    assert inside.blocked_reason.startswith("blackout by rule wednesday-afternoon-freeze")
    assert "inside window Wed 15:00-16:00 Europe/Paris" in inside.blocked_reason
    assert outside.allowed is True


def test_an_overnight_window_belongs_to_the_day_it_starts():
    rule = PolicyRule(window_weekdays=[4], window_start=time(22, 0), window_end=time(6, 0), window_timezone="UTC")

    assert policy.in_window(rule, datetime(2026, 11, 27, 23, 0, tzinfo=UTC))  # Friday 23:00
    assert policy.in_window(rule, datetime(2026, 11, 28, 5, 59, tzinfo=UTC))  # Saturday 05:59
    assert not policy.in_window(rule, datetime(2026, 11, 28, 23, 0, tzinfo=UTC))  # Saturday 23:00
    assert not policy.in_window(rule, datetime(2026, 11, 27, 5, 0, tzinfo=UTC))  # Friday 05:00 (Thursday's night)


def test_with_a_limit_of_three_per_hour_the_fourth_action_on_a_target_is_blocked():
    _rule("three-per-hour", "limit", max_per_hour=3)
    other_target = replace(FACTS, target="/srv/billing.sqlite3")

    spent = [policy.consume_action_budget(FACTS) for _ in range(3)]
    assert spent == [(True, "")] * 3
    fourth = policy.consume_action_budget(FACTS)
    decision = policy.evaluate(FACTS)

    assert fourth == (False, "hourly budget of rule three-per-hour spent: 3 action(s) per hour on /srv/orders.sqlite3")
    assert decision.allowed is False
    assert decision.blocked_reason == fourth[1]
    assert policy.consume_action_budget(other_target) == (True, "")


def test_a_spender_is_charged_once_however_often_its_task_is_redelivered(redis_client):
    _rule("one-per-hour", "limit", max_per_hour=1)

    first = policy.consume_action_budget(FACTS, spender="run-41")
    # The same run again (a gate task redelivered after its transition failed): not charged
    # twice, and not blocked by the hit it already made.
    again = policy.consume_action_budget(FACTS, spender="run-41")
    other = policy.consume_action_budget(FACTS, spender="run-42")

    assert first == again == (True, "")
    assert other == (False, "hourly budget of rule one-per-hour spent: 1 action(s) per hour on /srv/orders.sqlite3")
    markers = list(redis_client.scan_iter(f"{policy.LIMIT_NAMESPACE}:spent:*"))
    assert len(markers) == 1
    assert 0 < redis_client.ttl(markers[0]) <= 3600  # gone with the hour its hit counts in


@pytest.mark.django_db(transaction=True)
def test_two_deliveries_of_one_run_charging_at_once_are_charged_once():
    """A reaper's re-dispatch of a gate beside the late original: both pass, one hit is spent."""
    _rule("one-per-hour", "limit", max_per_hour=1)

    results = run_together(lambda: policy.consume_action_budget(FACTS, spender="run-7"), 4)

    assert results == [(True, "")] * 4
    assert policy.consume_action_budget(FACTS, spender="run-8")[0] is False  # the one hit is spent


def test_evaluate_does_not_spend_the_budget():
    _rule("one-per-hour", "limit", max_per_hour=1)

    for _ in range(3):
        assert policy.evaluate(FACTS).allowed is True
    assert policy.consume_action_budget(FACTS) == (True, "")
    assert policy.evaluate(FACTS).allowed is False


def test_disabled_rules_are_ignored():
    _rule("off", "deny", enabled=False)

    assert policy.evaluate(FACTS, now=WEDNESDAY).allowed is True


def test_shadow_mode_follows_the_setting_or_the_admin_switch(settings):
    settings.GRACE_SHADOW_MODE = False
    assert policy.shadow_mode() is False
    GovernanceSettings.objects.create(pk=1, shadow_mode=True)
    assert policy.shadow_mode() is True
    GovernanceSettings.objects.filter(pk=1).update(shadow_mode=False)
    settings.GRACE_SHADOW_MODE = True
    assert policy.shadow_mode() is True


def test_defaults_install_safe_rules_and_an_expiring_beat_entry_once():
    created = defaults.install()

    assert created >= len(defaults.DEFAULT_RULES) + 1  # plus any governance group a flush removed
    assert defaults.install() == 0
    task = PeriodicTask.objects.get(task="approvals.expire_requests")
    assert task.expire_seconds and task.expire_seconds < task.interval.every
    unknown = policy.evaluate(replace(FACTS, diagnosis_code="unknown"), now=WEDNESDAY)
    cloud = policy.evaluate(replace(FACTS, families=["aws"], environment="production"), now=WEDNESDAY)
    assert unknown.allowed is False
    assert cloud.tier == 3
    assert PolicyRule.objects.get(name="weekend-change-freeze").enabled is False


def test_a_rule_validates_its_fields():
    from django.core.exceptions import ValidationError

    rule = PolicyRule(name="bad", effect="require_tier", tier=1, window_timezone="Mars/Olympus", window_weekdays=[9])
    with pytest.raises(ValidationError) as excinfo:
        rule.full_clean()

    assert {"tier", "window_timezone", "window_weekdays"} <= set(excinfo.value.message_dict)


def test_budgets_work_over_a_redis_unix_socket(tmp_path, settings):
    import subprocess
    import time as clock

    sock = tmp_path / "redis.sock"
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = clock.monotonic() + 10
        while not sock.exists():
            assert clock.monotonic() < deadline, "redis-server did not open its socket"
            clock.sleep(0.02)
        settings.REDIS_URL = f"unix://{sock}"
        _rule("one-per-hour", "limit", max_per_hour=1)

        assert policy.consume_action_budget(FACTS) == (True, "")
        assert policy.consume_action_budget(FACTS)[0] is False
    finally:
        server.terminate()
        server.wait(10)
