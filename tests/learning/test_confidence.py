"""Confidence is a Wilson lower bound and recommendations rank by posterior mean, exploring the under-tried."""

from __future__ import annotations

import pytest

from learning import estimators, services
from learning.models import PlaybookStatistics


def _stats(playbook: str, successes: int, attempts: int, diagnosis: str = "db_locked") -> PlaybookStatistics:
    return PlaybookStatistics.objects.create(
        diagnosis_code=diagnosis,
        playbook=playbook,
        attempts=attempts,
        successes=successes,
        failures=attempts - successes,
    )


@pytest.mark.parametrize(
    ("successes", "attempts", "lower", "upper"),
    [
        # By hand: p=0.8, n=10, z=1.64485: (0.8 + 0.13528 - 1.64485 * sqrt(0.016 + 0.006764)) / 1.27055
        (8, 10, 0.5408, 0.9314),
        (3, 3, 0.5258, 1.0),
        (0, 5, 0.0, 0.3511),
        (45, 50, 0.8085, 0.9505),
        (0, 0, 0.0, 1.0),
    ],
)
def test_wilson_bounds_match_hand_computed_values(successes, attempts, lower, upper):
    assert estimators.wilson_lower(successes, attempts) == pytest.approx(lower, abs=1e-4)
    assert estimators.wilson_upper(successes, attempts) == pytest.approx(upper, abs=1e-4)


def test_robust_statistics_ignore_an_outlier():
    values = [10, 11, 9, 10, 12, 10, 1000]

    assert estimators.median(values) == 10
    # |deviations| = 0,1,1,0,2,0,990 -> median 1 -> scaled 1.4826
    assert estimators.mad(values) == pytest.approx(1.4826)
    assert estimators.percentile([1, 2, 3, 4, 5], 50) == 3
    assert estimators.percentile([1, 2, 3, 4, 5], 99) == pytest.approx(4.96)


@pytest.mark.django_db
def test_confidence_is_the_wilson_lower_bound_once_there_is_enough_evidence():
    _stats("kill-blocker", 8, 10)
    _stats("lucky", 2, 2)

    assert services.confidence("db_locked", "kill-blocker") == pytest.approx(0.5408, abs=1e-4)
    # Two out of two is below MIN_ATTEMPTS_FOR_CONFIDENCE (3): not enough to earn autonomy.
    assert services.MIN_ATTEMPTS_FOR_CONFIDENCE == 3
    assert services.confidence("db_locked", "lucky") == 0.0
    assert services.confidence("db_locked", "unknown-playbook") == 0.0
    assert services.confidence("db_locked", "kill-blocker") > services.CONFIDENCE_TIER_THRESHOLD == 0.5


@pytest.mark.django_db
def test_recommendations_rank_by_posterior_mean_and_give_under_tried_playbooks_a_chance():
    _stats("proven", 45, 50)
    _stats("mediocre", 8, 10)
    _stats("half-tried", 1, 2)
    _stats("other-diagnosis", 10, 10, diagnosis="disk_full")

    ranked = services.recommend("db_locked", ["mediocre", "proven", "half-tried", "brand-new", "other-diagnosis"])

    # Statistics are per diagnosis: "other-diagnosis" has never run for db_locked, so it explores too.
    assert [r.playbook for r in ranked] == ["brand-new", "other-diagnosis", "proven", "half-tried", "mediocre"]
    by_name = {r.playbook: r for r in ranked}
    assert by_name["brand-new"].exploring and by_name["brand-new"].score == 1.0
    assert by_name["proven"].score == pytest.approx(46 / 52)  # Beta(1,1) posterior mean
    assert by_name["proven"].confidence == pytest.approx(0.8085, abs=1e-4)
    assert not by_name["proven"].exploring
    assert by_name["half-tried"].exploring and by_name["half-tried"].confidence == 0.0
    assert by_name["mediocre"].score == pytest.approx(0.75)
    assert by_name["mediocre"].evidence["wilson_lower"] == pytest.approx(0.5408, abs=1e-4)
    assert by_name["mediocre"].evidence["ranked_by"] == "posterior_mean"
    assert (by_name["proven"].attempts, by_name["proven"].successes) == (50, 45)


@pytest.mark.django_db
def test_ties_prefer_more_evidence_then_the_name():
    _stats("b-many", 19, 28)
    _stats("a-few", 4, 5)  # posterior 5/7 versus 20/30: not a tie
    _stats("c-same", 19, 28)

    ranked = [r.playbook for r in services.recommend("db_locked", ["c-same", "b-many", "a-few"])]

    assert ranked == ["a-few", "b-many", "c-same"]
