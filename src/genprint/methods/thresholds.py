"""The rule ``metric``, ``baseline`` and ``probe`` set per-source thresholds by (validation data
only; ``invert`` thresholds p-values at its test level α instead).

A source's threshold is chosen so that a new image of that source, exchangeable with its
``n`` held-out (validation) images, is accepted with probability at least ``target_accept``:
the finite-sample (split-conformal) quantile, i.e. the ⌈(n + 1)·target⌉-th best held-out score.
When that rank exceeds ``n`` (fewer than 19 images for 95%), no order statistic guarantees the
target and the worst held-out score is used: its expected acceptance is n / (n + 1). (At 95%
the rank is n, the worst score, for every n ≤ 38.)

With 200 validation images this is the plain 95% quantile give or take one rank; with 10 images
the plain interpolated quantile would accept only ≈ 0.87 of new images in expectation, the worst
of the 10 accepts 10/11 ≈ 0.91. Thresholds are always one of the held-out scores, so every
held-out image at or above the rank is accepted again exactly (ties are accepted).
"""

from __future__ import annotations

import math

import numpy as np


def acceptance_rank(n: int, target_accept: float) -> int:
    """1-based rank, among ``n`` held-out scores sorted best first, of the threshold."""
    if n <= 0:
        raise ValueError("no held-out scores to set a threshold from")
    if not 0.0 < target_accept <= 1.0:
        raise ValueError(f"target_accept must be in (0, 1], got {target_accept}")
    return min(math.ceil((n + 1) * target_accept - 1e-9), n)


def score_threshold(held_out: np.ndarray, target_accept: float) -> float:
    """Threshold on a score where higher = more like the source (accept ``score >= t``)."""
    s = np.sort(np.asarray(held_out, dtype=np.float64).ravel())[::-1]
    return float(s[acceptance_rank(len(s), target_accept) - 1])


def distance_threshold(held_out: np.ndarray, target_accept: float) -> float:
    """Threshold on a distance where lower = more like the source (accept ``d <= t``)."""
    d = np.sort(np.asarray(held_out, dtype=np.float64).ravel())
    return float(d[acceptance_rank(len(d), target_accept) - 1])
