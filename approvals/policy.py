"""Policy evaluation: which tier a plan needs, and whether it may run at all.

Precedence, in this order:

1. Built-in tier raises from settings: a production environment (tier 2), learned
   confidence under the playbook's threshold (tier 2), recent failures on the
   target (tier 2), a blast radius above ``GRACE_POLICY_MAX_BLAST_RADIUS`` (tier 3).
2. Enabled ``PolicyRule`` rows, by ``priority`` (lower first), then name. A rule
   applies when every non-empty match list is hit and the time is inside its
   window (if it has one).
   - allow / deny: the FIRST applying allow-or-deny rule decides; at equal
     priority deny comes first. No applying rule means allowed. A deny with a
     window is a blackout.
   - require tier N: every applying rule raises the tier to at least N
     (an allow never lowers a tier).
   - limit: every applying limit must have budget left for the target in the
     sliding hour (an allow does not lift a limit).

``evaluate`` only reads (rules, and the budgets in Redis without spending them);
``consume_action_budget`` spends one hit per applying limit when the pipeline
actually executes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

import redis
from django.conf import settings
from django.utils import timezone
from limits import RateLimitItemPerHour
from limits.strategies import MovingWindowRateLimiter

from approvals.choices import WEEKDAYS, Effect
from approvals.models import GovernanceSettings, PolicyRule
from grace_site import redis as grace_redis

LIMIT_NAMESPACE = "grace-policy"


@dataclass(frozen=True)
class PlanFacts:
    actions: list[str]
    families: list[str]
    environment: str
    service: str
    diagnosis_code: str
    target: str
    declared_tier: int
    confidence: float | None
    confidence_threshold: float
    recent_failures: int
    blast_radius: int  # steps/targets touched


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    tier: int
    reasons: list[str]  # one line per tier raise / deny, human-readable
    explanation: list[dict]  # per rule considered: {"rule", "matched", "why", "effect"}
    blocked_reason: str = ""  # set when not allowed (deny rule, blackout, hourly budget)


@dataclass
class _Tally:
    tier: int
    reasons: list[str] = field(default_factory=list)
    explanation: list[dict] = field(default_factory=list)

    def raise_to(self, tier: int, why: str) -> None:
        if tier > self.tier:
            self.reasons.append(f"tier {self.tier} -> {tier}: {why}")
            self.tier = tier

    def explain(self, rule: str, matched: bool, why: str, effect: str) -> None:
        self.explanation.append({"rule": rule, "matched": matched, "why": why, "effect": effect})


def shadow_mode() -> bool:
    """True when GRACE must plan and gate but execute nothing (setting or admin switch)."""
    if settings.GRACE_SHADOW_MODE:
        return True
    return GovernanceSettings.objects.filter(pk=1, shadow_mode=True).exists()


def _limiter() -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(grace_redis.rate_limit_storage(connect_timeout=2, timeout=2))


def _budget_item(rule: PolicyRule) -> RateLimitItemPerHour:
    return RateLimitItemPerHour(rule.max_per_hour, namespace=LIMIT_NAMESPACE)


def _budget_key(rule: PolicyRule, facts: PlanFacts) -> tuple[str, str]:
    return (f"rule-{rule.pk}", facts.target or "-")


def _hits(patterns: list[str], values: list[str]) -> list[str]:
    return [value for value in values if any(fnmatchcase(value, pattern) for pattern in patterns)]


def _match(rule: PolicyRule, facts: PlanFacts) -> tuple[bool, list[str]]:
    """Whether every non-empty match list of the rule is hit, with one phrase per criterion."""
    criteria = [
        ("action", rule.match_actions, list(facts.actions)),
        ("family", rule.match_families, list(facts.families)),
        ("environment", rule.match_environments, [facts.environment]),
        ("service", rule.match_services, [facts.service]),
        ("diagnosis", rule.match_diagnoses, [facts.diagnosis_code]),
    ]
    phrases: list[str] = []
    for label, patterns, values in criteria:
        if not patterns:
            continue
        hit = _hits(patterns, values)
        if not hit:
            shown = ", ".join(values) or "(none)"
            return False, [f"{label} {shown} not in {patterns}"]
        phrases.append(f"{label} {', '.join(hit)} in {patterns}")
    return True, phrases or ["matches every plan"]


def _window_text(rule: PolicyRule) -> str:
    days = ",".join(WEEKDAYS[d] for d in sorted(rule.window_weekdays)) or "daily"
    if rule.window_start is None:
        return f"{days} (all day) {rule.window_timezone}"
    return f"{days} {rule.window_start:%H:%M}-{rule.window_end:%H:%M} {rule.window_timezone}"


def in_window(rule: PolicyRule, now: datetime) -> bool:
    """Whether ``now`` is inside the rule's window. A window whose end is before its
    start runs past midnight and belongs to the weekday it starts on."""
    if not rule.window_weekdays and rule.window_start is None:
        return True
    local = now.astimezone(ZoneInfo(rule.window_timezone))
    days = set(rule.window_weekdays) or set(range(7))
    start: time | None = rule.window_start
    end: time | None = rule.window_end
    clock = local.time().replace(tzinfo=None)
    if start is None or end is None:
        return local.weekday() in days
    if start < end:
        return local.weekday() in days and start <= clock < end
    yesterday = (local - timedelta(days=1)).weekday()
    return (local.weekday() in days and clock >= start) or (yesterday in days and clock < end)


def _builtin_raises(facts: PlanFacts, tally: _Tally) -> None:
    production = facts.environment in settings.GRACE_POLICY_PRODUCTION_ENVIRONMENTS
    tally.explain(
        "builtin:production",
        production,
        f"environment {facts.environment!r} {'is' if production else 'is not'} production",
        "require_tier 2",
    )
    if production:
        tally.raise_to(2, f"production environment {facts.environment!r}")

    low = facts.confidence is not None and facts.confidence < facts.confidence_threshold
    shown = "unknown" if facts.confidence is None else f"{facts.confidence:.2f}"
    tally.explain(
        "builtin:confidence",
        low,
        f"learned confidence {shown} {'<' if low else 'not under'} threshold {facts.confidence_threshold:.2f}",
        "require_tier 2",
    )
    if low:
        tally.raise_to(2, f"learned confidence {shown} under threshold {facts.confidence_threshold:.2f}")

    limit = settings.GRACE_POLICY_RECENT_FAILURES
    failing = facts.recent_failures >= limit
    tally.explain(
        "builtin:recent-failures",
        failing,
        f"{facts.recent_failures} recent failure(s) on {facts.target or 'the target'} (raises at {limit})",
        "require_tier 2",
    )
    if failing:
        tally.raise_to(2, f"{facts.recent_failures} recent failure(s) on {facts.target or 'the target'}")

    radius = settings.GRACE_POLICY_MAX_BLAST_RADIUS
    wide = facts.blast_radius > radius
    tally.explain(
        "builtin:blast-radius", wide, f"blast radius {facts.blast_radius} (raises above {radius})", "require_tier 3"
    )
    if wide:
        tally.raise_to(3, f"blast radius {facts.blast_radius} above {radius}")


def _ordered_rules() -> list[PolicyRule]:
    order = {Effect.DENY: 0, Effect.ALLOW: 1, Effect.REQUIRE_TIER: 2, Effect.LIMIT: 3}
    rules = list(PolicyRule.objects.filter(enabled=True))
    return sorted(rules, key=lambda r: (r.priority, order.get(r.effect, 9), r.name))


def applying_rules(facts: PlanFacts, now: datetime, tally: _Tally | None = None) -> list[tuple[PolicyRule, str]]:
    """Enabled rules that apply to the plan now, in precedence order, each with its reason."""
    applying = []
    for rule in _ordered_rules():
        effect = rule.effect if rule.effect != Effect.REQUIRE_TIER else f"require_tier {rule.tier}"
        matched, phrases = _match(rule, facts)
        why = "; ".join(phrases)
        if matched and (rule.window_weekdays or rule.window_start is not None):
            inside = in_window(rule, now)
            why += f"; {'inside' if inside else 'outside'} window {_window_text(rule)}"
            matched = inside
        if tally is not None:
            tally.explain(rule.name, matched, why, effect)
        if matched:
            applying.append((rule, why))
    return applying


def evaluate(facts: PlanFacts, *, now: datetime | None = None) -> PolicyDecision:
    """The plan's tier and whether it may run now. Reads rules and budgets; changes nothing.

    Raises ``redis.RedisError`` when a limit applies and the budget store is unreachable
    (the caller's task retries; a plan is never waved through unchecked).
    """
    now = now or timezone.now()
    declared = min(max(int(facts.declared_tier), 1), 3)
    tally = _Tally(tier=declared)
    _builtin_raises(facts, tally)
    verdict: tuple[PolicyRule, str] | None = None
    blocked_reason = ""
    for rule, why in applying_rules(facts, now, tally):
        if rule.effect in (Effect.ALLOW, Effect.DENY):
            if verdict is None:
                verdict = (rule, why)
            else:
                _annotate(tally, rule, f"overridden by earlier rule {verdict[0].name}")
        elif rule.effect == Effect.REQUIRE_TIER:
            tally.raise_to(rule.tier, f"rule {rule.name}: {why}")
        elif rule.effect == Effect.LIMIT:
            item = _budget_item(rule)
            if not _limiter().test(item, *_budget_key(rule, facts)):
                _annotate(tally, rule, "budget spent")
                blocked_reason = blocked_reason or _spent(rule, facts)
    if verdict is not None and verdict[0].effect == Effect.DENY:
        rule, why = verdict
        kind = "blackout" if (rule.window_weekdays or rule.window_start is not None) else "denied"
        blocked_reason = f"{kind} by rule {rule.name}: {why}"
    if blocked_reason:
        tally.reasons.append(f"blocked: {blocked_reason}")
    return PolicyDecision(
        allowed=not blocked_reason,
        tier=tally.tier,
        reasons=tally.reasons,
        explanation=tally.explanation,
        blocked_reason=blocked_reason,
    )


def _annotate(tally: _Tally, rule: PolicyRule, note: str) -> None:
    for entry in reversed(tally.explanation):
        if entry["rule"] == rule.name:
            entry["why"] += f"; {note}"
            return


def consume_action_budget(facts: PlanFacts, *, spender: str = "", now: datetime | None = None) -> tuple[bool, str]:
    """Spend one hit of every applying hourly limit for the plan's target.

    Returns ``(False, reason)`` and spends nothing more once a limit is spent.
    ``spender`` (a run, say) makes the call idempotent: a redelivered task that
    already spent its hit is neither charged again nor blocked by its own hit.
    Raises ``redis.RedisError`` when the budget store is unreachable.
    """
    now = now or timezone.now()
    limits_ = [rule for rule, _ in applying_rules(facts, now) if rule.effect == Effect.LIMIT]
    if not limits_:
        return True, ""
    limiter = _limiter()
    if not spender:
        return _charge(limiter, limits_, facts, {})
    client = limiter.storage.get_connection()
    # Two deliveries of one task at once (a reaper's re-dispatch beside a late original) take turns,
    # so the second sees the first one's markers.
    digest = hashlib.sha256(spender.encode()).hexdigest()[:32]
    lock = client.lock(f"{LIMIT_NAMESPACE}:spending:{digest}", timeout=30, blocking_timeout=10)
    if not lock.acquire():
        raise redis.TimeoutError(f"the budget of {spender} is being charged by another task")
    try:
        markers = {rule.pk: _spent_marker(rule, facts, spender) for rule in limits_}
        seen = client.mget(list(markers.values()))
        paid = {pk for pk, mark in zip(markers, seen, strict=True) if mark}
        return _charge(limiter, [rule for rule in limits_ if rule.pk not in paid], facts, markers, client)
    finally:
        lock.release()


def _charge(limiter, rules: list[PolicyRule], facts: PlanFacts, markers: dict, client=None) -> tuple[bool, str]:
    """Test every limit, then hit each; a marker is written after its hit, so a crash between the two
    over-counts (fails closed) and never under-counts."""
    for rule in rules:
        if not limiter.test(_budget_item(rule), *_budget_key(rule, facts)):
            return False, _spent(rule, facts)
    for rule in rules:
        if not limiter.hit(_budget_item(rule), *_budget_key(rule, facts)):
            return False, _spent(rule, facts)
        if rule.pk in markers:
            client.set(markers[rule.pk], 1, ex=_budget_item(rule).get_expiry())
    return True, ""


def _spent_marker(rule: PolicyRule, facts: PlanFacts, spender: str) -> str:
    rule_key, target = _budget_key(rule, facts)
    digest = hashlib.sha256(f"{rule_key}|{target}|{spender}".encode()).hexdigest()[:32]
    return f"{LIMIT_NAMESPACE}:spent:{digest}"


def _spent(rule: PolicyRule, facts: PlanFacts) -> str:
    return f"hourly budget of rule {rule.name} spent: {rule.max_per_hour} action(s) per hour on {facts.target}"
