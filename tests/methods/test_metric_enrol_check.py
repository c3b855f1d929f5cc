"""The leave-one-out self-check of a `metric` enrolment."""

from __future__ import annotations

import numpy as np

from genprint.methods import metric_refs as refs
from genprint.methods.metric_enrol_check import MAX_CHECK_IMAGES, leave_one_out_check


def _check(new: np.ndarray, **kw: object) -> dict:
    a = np.eye(8)[0]
    args = {"k": 8, "seed": 0, "target_accept": 0.95, "references": a[None, :],
            "reference_sources": np.array([0]), "thresholds": np.array([0.9]),
            "enrolled": np.array([False]), "classes": ["A"], "separators": None,
            "samples": None, **kw}
    return leave_one_out_check(new, np.arange(len(new)), new, **args)  # type: ignore[arg-type]


def test_a_tight_new_source_is_recognised_when_left_out() -> None:
    rng = np.random.default_rng(0)
    new = refs.normalise(np.eye(8)[3] + rng.normal(0, 0.05, (10, 8)))
    out = _check(new)
    # the largest of 9 held-out distances misses about one image in 10, which stays unknown
    assert out["loo_recall"] >= 0.8 and set(out["loo_taken_by"]) <= {"unknown"}


def test_a_new_source_spread_over_a_known_one_is_taken_by_it() -> None:
    rng = np.random.default_rng(1)
    # half the new images sit right on A's reference point, half far away and spread out
    near = refs.normalise(np.eye(8)[0] + rng.normal(0, 0.02, (5, 8)))
    far = refs.normalise(np.eye(8)[5] + rng.normal(0, 0.6, (5, 8)))
    out = _check(np.concatenate([near, far]))
    assert out["loo_recall"] < 1.0 and set(out["loo_taken_by"]) <= {"A", "unknown"}
    assert sum(out["loo_taken_by"].values()) == round(10 * (1 - out["loo_recall"]))


def test_the_check_is_skipped_for_too_few_or_too_many_images() -> None:
    rng = np.random.default_rng(2)
    for n in (2, MAX_CHECK_IMAGES + 1):
        out = _check(refs.normalise(rng.normal(size=(n, 8))))
        assert out["loo_recall"] is None and out["loo_note"].startswith("not checked")


def test_a_separator_is_fitted_for_each_left_out_image_when_asked() -> None:
    rng = np.random.default_rng(3)
    new = refs.normalise(np.eye(8)[3] + rng.normal(0, 0.3, (10, 8)))
    samples = refs.normalise(np.eye(8)[0] + rng.normal(0, 0.1, (50, 8)))
    seps = np.full((1, 9), np.nan)
    plain = _check(new, separators=seps)
    claimed = _check(new, separators=seps, samples=samples)
    assert claimed["loo_recall"] >= plain["loo_recall"]
