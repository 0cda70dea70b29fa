"""The input sentinel: ordered, admin-editable rules that turn a signal into a diagnosis.

Rules are compiled once per change of the rule set and kept in-process. Every
``GRACE_DIAGNOSIS_RECHECK_SECONDS`` a process compares a cheap version of the rule table (row count and
newest ``updated_at``) with the one it compiled, so a change made in any process (admin, API, shell) is
picked up by every web and worker process within that interval; :func:`invalidate` forces it at once.

Matching is indexed: a rule with exact label conditions is filed under one ``(label, value)`` pair and only
tried for signals that carry it, so a signal is checked against a handful of candidates even with
thousands of rules. The first candidate in rule order whose every condition holds wins.
"""

from __future__ import annotations

import operator
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Count, Max

from incidents.choices import UNKNOWN_DIAGNOSIS

if TYPE_CHECKING:
    from incidents.models import DiagnosisRule
    from incidents.services import Signal

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Diagnosis:
    code: str
    confidence: float
    evidence: dict


@dataclass(frozen=True)
class CompiledRule:
    order: int
    id: int
    name: str
    code: str
    confidence: float
    source: str
    label_equals: tuple[tuple[str, str], ...]
    label_regex: tuple[tuple[str, re.Pattern], ...]
    title_re: re.Pattern | None
    message_re: re.Pattern | None
    thresholds: tuple[tuple[str, str, str, float], ...]  # (scope, name, op, value)

    @classmethod
    def from_model(cls, order: int, rule: DiagnosisRule) -> CompiledRule:
        return cls(
            order=order,
            id=rule.pk,
            name=rule.name,
            code=rule.code,
            confidence=float(rule.confidence),
            source=rule.source,
            label_equals=tuple(sorted(rule.label_equals.items())),
            label_regex=tuple((key, re.compile(pattern)) for key, pattern in sorted(rule.label_regex.items())),
            title_re=re.compile(rule.title_regex) if rule.title_regex else None,
            message_re=re.compile(rule.message_regex) if rule.message_regex else None,
            thresholds=tuple(
                (item["field"].partition(".")[0], item["field"].partition(".")[2], item["op"], float(item["value"]))
                for item in rule.thresholds
            ),
        )

    def match(self, signal: Signal) -> dict | None:
        """What matched, or None when any condition fails."""
        if self.source and signal.source != self.source:
            return None
        labels = signal.labels
        matched: dict[str, Any] = {}
        for key, expected in self.label_equals:
            if labels.get(key) != expected:
                return None
        if self.label_equals:
            matched["labels"] = dict(self.label_equals)
        for key, pattern in self.label_regex:
            value = labels.get(key)
            found = pattern.search(value) if value is not None else None
            if found is None:
                return None
            matched.setdefault("label_regex", {})[key] = found.group(0)
        if self.title_re is not None:
            found = self.title_re.search(signal.title)
            if found is None:
                return None
            matched["title"] = found.group(0)
        if self.message_re is not None:
            found = self.message_re.search(signal.message)
            if found is None:
                return None
            matched["message"] = found.group(0)
        for scope, name, op, limit in self.thresholds:
            actual = _number(_scope_values(signal, scope).get(name))
            if actual is None or not _OPS[op](actual, limit):
                return None
            matched.setdefault("thresholds", []).append(
                {"field": f"{scope}.{name}", "op": op, "value": limit, "actual": actual}
            )
        if self.source:
            matched["source"] = self.source
        return matched


def _scope_values(signal: Signal, scope: str) -> dict:
    if scope == "labels":
        return signal.labels
    annotations = signal.raw.get("annotations") if isinstance(signal.raw, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN never satisfies a threshold


class RuleSet:
    """Compiled enabled rules with an index by source and by one exact label per rule."""

    def __init__(self, rules: list[CompiledRule], version: tuple):
        self.rules = rules
        self.version = version
        self.anchored: dict[tuple[str, str], list[CompiledRule]] = {}
        self.floating: list[CompiledRule] = []
        for rule in rules:
            if rule.label_equals:
                self.anchored.setdefault(rule.label_equals[0], []).append(rule)
            else:
                self.floating.append(rule)
        self.anchor_keys = tuple(sorted({key for key, _ in self.anchored}))

    def candidates(self, signal: Signal) -> list[CompiledRule]:
        labels = signal.labels
        found = [rule for rule in self.floating if not rule.source or rule.source == signal.source]
        for key in self.anchor_keys:
            value = labels.get(key)
            if value is not None:
                found.extend(self.anchored.get((key, value), ()))
        found.sort(key=_order)
        return found

    def diagnose(self, signal: Signal) -> Diagnosis:
        candidates = self.candidates(signal)
        for rule in candidates:
            matched = rule.match(signal)
            if matched is not None:
                evidence = {
                    "rule": rule.id,
                    "rule_name": rule.name,
                    "matched": matched,
                    "candidates": len(candidates),
                    "rules": len(self.rules),
                }
                return Diagnosis(rule.code, rule.confidence, evidence)
        evidence = {"rule": None, "candidates": len(candidates), "rules": len(self.rules)}
        return Diagnosis(UNKNOWN_DIAGNOSIS, 0.0, evidence)


def _order(rule: CompiledRule) -> int:
    return rule.order


_lock = threading.Lock()
_cache: dict[str, Any] = {"ruleset": None, "checked_at": 0.0}


def _table_version() -> tuple:
    from incidents.models import DiagnosisRule

    row = DiagnosisRule.objects.aggregate(count=Count("id"), newest=Max("updated_at"))
    return (row["count"], row["newest"].isoformat() if row["newest"] else "")


def compile_rules(rules: list[DiagnosisRule], version: tuple = ()) -> RuleSet:
    return RuleSet([CompiledRule.from_model(order, rule) for order, rule in enumerate(rules)], version)


def _load(version: tuple) -> RuleSet:
    from incidents.models import DiagnosisRule

    return compile_rules(list(DiagnosisRule.objects.filter(enabled=True).order_by("position", "id")), version)


def current_ruleset(max_age: float | None = None) -> RuleSet:
    """The compiled rule set, re-checked against the table when the last check is older than ``max_age``
    seconds (default GRACE_DIAGNOSIS_RECHECK_SECONDS; 0 checks now: one cheap query, recompiling only if the
    table changed)."""
    ruleset: RuleSet | None = _cache["ruleset"]
    now = time.monotonic()
    limit = settings.GRACE_DIAGNOSIS_RECHECK_SECONDS if max_age is None else max_age
    if ruleset is not None and now - _cache["checked_at"] < limit:
        return ruleset
    with _lock:
        version = _table_version()
        ruleset = _cache["ruleset"]
        if ruleset is None or ruleset.version != version:
            ruleset = _load(version)
            _cache["ruleset"] = ruleset
        _cache["checked_at"] = time.monotonic()
    return ruleset


def invalidate() -> None:
    """Re-read the rule table on the next diagnosis in this process."""
    _cache["checked_at"] = 0.0
    _cache["ruleset"] = None


def diagnose(signal: Signal) -> Diagnosis:
    """The diagnosis of a (normalized) signal: the first matching rule, or ``unknown``."""
    return current_ruleset().diagnose(signal)


def explain(rule: DiagnosisRule, signal: Signal) -> dict | None:
    """What one rule (enabled or not) matches in a signal, or None: the admin's "test this rule"."""
    return CompiledRule.from_model(0, rule).match(signal)
