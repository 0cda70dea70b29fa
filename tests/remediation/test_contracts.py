"""Contract predicates: operators, templates, missing facts and polling with `within`."""

import itertools

import pytest
from rest_framework.exceptions import ValidationError

from remediation.contracts import check, validate_contract, verify


def _one(predicate, facts, params=None, state=None):
    (result,) = check([predicate], facts, params or {}, state or {})
    return result


@pytest.mark.parametrize(
    ("op", "value", "actual", "passed"),
    [
        ("<=", 1048576, 0, True),
        ("<=", 1048576, 4194304, False),
        ("==", "running", "running", True),
        ("==", None, None, True),
        ("!=", "2026-01-01T00:00:00", "2026-01-01T00:00:05", True),
        (">=", 3, 2, False),
        ("in", ["ok", "healthy"], "healthy", True),
        ("not_in", ["failed"], "ok", True),
        ("exists", True, 0, True),
        ("exists", False, None, True),
        ("<", 5, "not a number", False),
    ],
)
def test_each_operator_compares_the_observed_fact(op, value, actual, passed):
    result = _one({"field": "f", "op": op, "value": value}, {"f": actual})

    assert result.passed is passed
    assert (result.expected, result.actual) == (value, actual)


def test_a_fact_that_was_not_observed_fails_every_comparison_and_says_so():
    for op in ("==", "!=", "<", "in"):
        result = _one({"field": "ghost", "op": op, "value": None}, {"other": 1})
        assert result.passed is False
        assert "was not observed" in result.detail


def test_values_can_name_the_snapshot_and_the_parameters():
    predicates = [
        {"field": "started_at", "op": "!=", "value": "{snapshot.started_at}"},
        {"field": "replicas", "op": "==", "value": "{params.replicas}"},
    ]

    results = check(predicates, {"started_at": "t2", "replicas": 3}, {"replicas": 3}, {"started_at": "t1"})

    assert [r.passed for r in results] == [True, True]
    assert [r.expected for r in results] == ["t1", 3]


def test_within_observes_again_until_the_predicate_holds():
    readings = itertools.chain([5_000_000, 3_000_000, 200], itertools.repeat(200))
    observed = []

    def observe():
        observed.append(next(readings))
        return {"wal_bytes": observed[-1]}

    (result,) = verify([{"field": "wal_bytes", "op": "<=", "value": 1024, "within": 5}], observe, {}, {})

    assert result.passed and result.actual == 200
    assert observed == [5_000_000, 3_000_000, 200]


def test_within_gives_up_with_the_last_observation():
    (result,) = verify([{"field": "ready", "op": "==", "value": True, "within": 0.3}], lambda: {"ready": False}, {}, {})

    assert result.passed is False and result.actual is False


@pytest.mark.parametrize(
    "contract",
    [
        "wal_bytes <= 1 MiB",
        [{"field": "x", "op": "~=", "value": 1}],
        [{"op": "==", "value": 1}],
        [{"field": "x", "op": "==", "value": 1, "within": -1}],
    ],
)
def test_a_malformed_contract_is_a_validation_error_naming_the_contract(contract):
    with pytest.raises(ValidationError) as error:
        validate_contract(contract)

    assert "contract" in error.value.detail
