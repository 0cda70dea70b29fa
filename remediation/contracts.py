"""Action contracts: machine-checkable predicates over observed facts.

A predicate is ``{"field", "op", "value", "within"}``. ``value`` may be a
template ``"{snapshot.<key>}"`` or ``"{params.<key>}"``. With ``within`` the
facts are observed again, with exponential backoff, until the predicate holds
or the time is up.

Besides the action's own facts, a field ``benchmark.<suite>.passed`` (or
``.regressions``, ``.failures``: counts) runs that benchmark suite after the
action: ``{"field": "benchmark.smoke.passed", "op": "==", "value": true}`` is
"no regression on the smoke suite".
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rest_framework import serializers
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential

from remediation.actions.base import ActionError, CannotObserve

_MISSING = object()


def _exists(actual: Any, expected: Any) -> bool:
    return (actual is not None and actual is not _MISSING) == bool(expected if expected is not None else True)


def _compare(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def safe(actual: Any, expected: Any) -> bool:
        if actual is _MISSING or actual is None:
            return False
        try:
            return bool(fn(actual, expected))
        except TypeError:
            return False

    return safe


def _equals(actual: Any, expected: Any) -> bool:
    """A fact observed as null equals null; a fact not observed at all equals nothing."""
    return actual is not _MISSING and actual == expected


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equals,
    "!=": lambda a, e: a is not _MISSING and a != e,
    "<": _compare(operator.lt),
    "<=": _compare(operator.le),
    ">": _compare(operator.gt),
    ">=": _compare(operator.ge),
    "in": _compare(lambda a, e: a in e),
    "not_in": _compare(lambda a, e: a not in e),
    "exists": _exists,
}

_TEMPLATE = re.compile(r"^\{(snapshot|params)\.([A-Za-z0-9_]+)\}$")
_BENCHMARK_FIELD = re.compile(r"^benchmark\.([a-z0-9][a-z0-9_-]*)\.(passed|regressions|failures)$")


def _benchmark_facts(predicates: list[dict]) -> dict:
    """Run each benchmark suite the predicates name (once per observation) and expose its verdict."""
    from learning import benchmarks

    facts: dict = {}
    for suite in sorted({m.group(1) for p in predicates if (m := _BENCHMARK_FIELD.match(p["field"]))}):
        verdict = benchmarks.no_regression(suite)
        facts[f"benchmark.{suite}.passed"] = verdict["passed"]
        facts[f"benchmark.{suite}.regressions"] = len(verdict["regressions"])
        facts[f"benchmark.{suite}.failures"] = len(verdict["failures"])
        facts[f"benchmark.{suite}.run_id"] = verdict["run_id"]
    return facts


class PredicateSerializer(serializers.Serializer):
    field = serializers.CharField(max_length=100)
    op = serializers.ChoiceField(choices=sorted(OPERATORS))
    value = serializers.JSONField(required=False, allow_null=True)
    within = serializers.FloatField(required=False, min_value=0, max_value=3600)


def validate_contract(predicates: Any) -> list[dict]:
    """Validated predicates, or a ValidationError naming the bad one."""
    if not isinstance(predicates, list):
        raise serializers.ValidationError({"contract": ["must be a list of predicates"]})
    serializer = PredicateSerializer(data=predicates, many=True)
    if not serializer.is_valid():
        raise serializers.ValidationError({"contract": serializer.errors})
    return [dict(p) for p in serializer.validated_data]


@dataclass
class PredicateResult:
    field: str
    operator: str
    expected: Any
    actual: Any
    passed: bool
    detail: str = ""


def _expected(value: Any, params: dict, state: dict) -> Any:
    if isinstance(value, str):
        match = _TEMPLATE.match(value)
        if match:
            source = state if match.group(1) == "snapshot" else params
            return source.get(match.group(2))
    return value


def check(predicates: list[dict], facts: dict, params: dict, state: dict) -> list[PredicateResult]:
    results = []
    for p in predicates:
        expected = _expected(p.get("value"), params, state)
        actual = facts.get(p["field"], _MISSING)
        passed = OPERATORS[p["op"]](actual, expected)
        results.append(
            PredicateResult(
                field=p["field"],
                operator=p["op"],
                expected=expected,
                actual=None if actual is _MISSING else actual,
                passed=passed,
                detail="" if actual is not _MISSING else f"fact {p['field']!r} was not observed",
            )
        )
    return results


def verify(
    predicates: list[dict], observe: Callable[[], dict], params: dict, state: dict, *, wait: bool = True
) -> list[PredicateResult]:
    """Observe and check; poll (bounded by the largest ``within``) until every predicate holds.

    Benchmark predicates (``benchmark.<suite>.*``) are not polled: the suite runs once, after the action's own
    predicates hold (a benchmark run is a real measurement, written down, not a cheap observation).
    """
    polled = [p for p in predicates if not _BENCHMARK_FIELD.match(p["field"])]
    once = [p for p in predicates if _BENCHMARK_FIELD.match(p["field"])]
    within = max((p.get("within") or 0 for p in polled), default=0) if wait else 0

    def attempt() -> list[PredicateResult]:
        try:
            facts = observe()
        except CannotObserve:
            raise  # not a predicate that failed: nothing can be judged (the caller ends the run BLOCKED)
        except ActionError as exc:
            return [
                PredicateResult(p["field"], p["op"], p.get("value"), None, False, f"observe failed: {exc}")
                for p in polled
            ]
        return check(polled, facts, params, state)

    results = attempt() if within <= 0 else _poll(attempt, within)
    if not once:
        return results
    if not all(r.passed for r in results):
        return results + [
            PredicateResult(p["field"], p["op"], p.get("value"), None, False, "not run: the other predicates failed")
            for p in once
        ]
    return results + check(once, _benchmark_facts(once), params, state)


def _poll(attempt: Callable[[], list[PredicateResult]], within: float) -> list[PredicateResult]:
    retrying = Retrying(
        stop=stop_after_delay(within),
        wait=wait_exponential(multiplier=0.02, min=0.02, max=1.0),
        retry=retry_if_result(lambda results: not all(r.passed for r in results)),
    )
    try:
        return retrying(attempt)
    except RetryError as exc:
        return exc.last_attempt.result()
