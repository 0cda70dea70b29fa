"""Regression detection against a rolling robust baseline, on synthetic series."""

from __future__ import annotations

import random

import pytest
from django.test import override_settings

from learning.benchmarks import baseline_of, is_regression
from learning.checks import Metric

LATENCY = Metric("x.latency_ms", floor=1.0)
THROUGHPUT = Metric("x.rows_per_s", unit="rows/s", higher_is_better=True, floor=0.0)
WINDOW = 20


def _alarms(series: list[float], metric: Metric) -> list[int]:
    """Judge each point against the (newest first) window before it, as the runner does."""
    alarms = []
    for i, value in enumerate(series):
        history = series[max(0, i - WINDOW) : i][::-1]
        if is_regression(value, baseline_of(history, metric), metric):
            alarms.append(i)
    return alarms


def _latency_noise(rng: random.Random, n: int, centre: float = 10.0) -> list[float]:
    # Latencies are right-skewed: log-normal noise with about 15 % spread, and 2 % hiccups at 1.5-1.8x the centre.
    return [centre * (rng.uniform(1.5, 1.8) if rng.random() < 0.02 else rng.lognormvariate(0, 0.15)) for _ in range(n)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_noise_raises_no_alarm(seed):
    rng = random.Random(seed)

    assert _alarms(_latency_noise(rng, 500), LATENCY) == []
    throughput = [5000 * rng.lognormvariate(0, 0.15) for _ in range(500)]
    assert _alarms(throughput, THROUGHPUT) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_3x_step_is_caught_at_once(seed):
    rng = random.Random(seed)
    series = _latency_noise(rng, 60) + [v * 3 for v in _latency_noise(rng, 5)]

    assert _alarms(series, LATENCY)[:1] == [60]


def test_a_3x_throughput_drop_is_caught():
    rng = random.Random(7)
    series = [5000 * rng.lognormvariate(0, 0.1) for _ in range(30)] + [5000 / 3]

    assert _alarms(series, THROUGHPUT) == [30]


def test_no_judgement_before_the_minimum_sample_count():
    with override_settings(GRACE_BENCH_MIN_SAMPLES=5):
        assert baseline_of([10.0] * 4, LATENCY) is None
        assert not is_regression(1000.0, baseline_of([10.0] * 4, LATENCY), LATENCY)
        assert baseline_of([10.0] * 5, LATENCY) is not None


def test_the_threshold_is_median_plus_k_mad_with_relative_and_absolute_floors():
    with override_settings(GRACE_BENCH_MAD_K=5.0, GRACE_BENCH_MIN_RELATIVE=1.0, GRACE_BENCH_MIN_SAMPLES=5):
        wide = baseline_of([10, 20, 30, 40, 50], Metric("m", floor=1.0))
        # median 30, MAD = 1.4826 * median(|-20|,|-10|,0,10,20) = 14.826 -> 30 + 74.13
        assert (wide.median, wide.mad) == (30, pytest.approx(14.826))
        assert wide.threshold == pytest.approx(104.13)
        # a perfectly flat series: the relative floor (twice the median) applies
        assert baseline_of([10] * 5, Metric("m", floor=1.0)).threshold == 20
        # a flat, tiny series: the metric's absolute floor applies
        assert baseline_of([0.2] * 5, Metric("m", floor=1.0)).threshold == pytest.approx(1.2)
        # throughput: half the median at most
        assert baseline_of([100] * 5, Metric("t", higher_is_better=True, floor=0.0)).threshold == 50
