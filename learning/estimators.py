"""Small, exact statistics used by learning: no third-party maths needed.

Confidence (used by governance) is the lower bound of the one-sided 95 %
Wilson score interval for the success proportion: with few attempts it stays
low however lucky they were (3 of 3 gives 0.53, 10 of 10 gives 0.79), and it
only climbs towards the observed rate as evidence accumulates.

Ranking uses the mean of the Beta posterior with a uniform Beta(1, 1) prior,
``(successes + 1) / (attempts + 2)`` (Laplace's rule of succession); an
under-tried playbook is ranked by the Wilson *upper* bound instead, an
optimistic (UCB-style) estimate that gives it a chance to prove itself.

Benchmarks use the median and the median absolute deviation (MAD), scaled by
1.4826 so that it estimates the standard deviation of normally distributed
noise while ignoring outliers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# One-sided 95 %: the 0.95 quantile of the standard normal distribution.
Z_95 = 1.6448536269514722
MAD_SCALE = 1.4826


def _wilson(successes: int, attempts: int, z: float, sign: int) -> float:
    if attempts <= 0:
        return 0.0 if sign < 0 else 1.0
    if not 0 <= successes <= attempts:
        raise ValueError(f"successes must be between 0 and attempts ({attempts}), got {successes}")
    n = attempts
    p = successes / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, max(0.0, (centre + sign * margin) / (1 + z2 / n)))


def wilson_lower(successes: int, attempts: int, z: float = Z_95) -> float:
    return _wilson(successes, attempts, z, -1)


def wilson_upper(successes: int, attempts: int, z: float = Z_95) -> float:
    return _wilson(successes, attempts, z, +1)


def beta_mean(successes: int, attempts: int, prior_alpha: float = 1.0, prior_beta: float = 1.0) -> float:
    return (successes + prior_alpha) / (attempts + prior_alpha + prior_beta)


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def mad(values: Sequence[float], centre: float | None = None) -> float:
    """Median absolute deviation, scaled to estimate a standard deviation."""
    centre = median(values) if centre is None else centre
    return MAD_SCALE * median([abs(v - centre) for v in values])


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
