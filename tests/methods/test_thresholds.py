"""The one threshold rule of every method: the finite-sample quantile of validation scores."""

from __future__ import annotations

import numpy as np
import pytest

from genprint.methods.thresholds import acceptance_rank, distance_threshold, score_threshold


def test_rank_is_the_finite_sample_quantile_and_the_worst_when_too_few() -> None:
    assert acceptance_rank(200, 0.95) == 191  # ⌈201 × 0.95⌉
    assert acceptance_rank(19, 0.95) == 19  # ⌈20 × 0.95⌉ = 19: the worst of 19
    assert acceptance_rank(10, 0.95) == 10  # too few for the target: the worst
    assert acceptance_rank(10, 0.5) == 6
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="target_accept"):
            acceptance_rank(10, bad)
    with pytest.raises(ValueError, match="held-out"):
        score_threshold(np.array([]), 0.95)


def test_scores_and_distances_are_mirror_images() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 4, 19, 20, 57, 300):
        d = rng.exponential(size=n)
        assert distance_threshold(d, 0.95) == -score_threshold(-d, 0.95)
        # the threshold is one of the held-out values: each one at or above it is accepted
        t = score_threshold(-d, 0.95)
        assert t in -d and np.mean(-d >= t) >= 0.95  # rank ⌈(n + 1)·0.95⌉ ≥ 0.95·n


def test_new_images_are_accepted_at_least_at_the_target_rate() -> None:
    rng = np.random.default_rng(1)
    accepted = [np.mean(rng.normal(size=2000) >= score_threshold(rng.normal(size=30), 0.95))
                for _ in range(400)]
    assert np.mean(accepted) >= 0.95
