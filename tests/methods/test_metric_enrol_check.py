"""The leave-one-out self-check of a `metric` enrolment."""

from __future__ import annotations

import numpy as np

from genprint.methods import metric_refs as refs
from genprint.methods.metric_enrol_check import (
    MAX_CHECK_IMAGES,
    known_overlap,
    leave_one_out_check,
)


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


def _overlap(new_points: np.ndarray, new_threshold: float) -> dict:
    """Known source A (index 0) with samples around e0; source B (1) around e1; new source 2."""
    rng = np.random.default_rng(4)
    samples = np.concatenate([refs.normalise(np.eye(8)[0] + rng.normal(0, 0.2, (40, 8))),
                              refs.normalise(np.eye(8)[1] + rng.normal(0, 0.05, (40, 8))),
                              new_points])
    owner = np.r_[np.zeros(40), np.ones(40), np.full(len(new_points), 2)].astype(int)
    references = np.concatenate([np.eye(8)[:2], new_points])
    ref_sources = np.r_[0, 1, np.full(len(new_points), 2)]
    return known_overlap(samples, owner, references=references, reference_sources=ref_sources,
                         thresholds=np.array([0.9, 0.3, new_threshold]),
                         enrolled=np.array([False, False, True]), separators=None,
                         classes=["A", "B", "new"], new=2)


def test_overlap_check_counts_the_known_samples_a_wide_new_source_takes() -> None:
    # the new source sits inside A's wide region, nearer to part of A's samples than A's point
    inside = refs.normalise(np.eye(8)[0] + np.eye(8)[4] * 0.5)[None, :]
    out = _overlap(inside, 0.6)
    assert set(out["overlap_taken"]) == {"A"} and 0 < out["overlap_taken"]["A"] < 1
    assert out["overlap_samples"] == 80
    assert out["overlap_share"] == out["overlap_taken"]["A"] * 40 / 80
    # B's samples are tight around their point: a far, tight new source takes nothing
    far = refs.normalise(np.eye(8)[6] + 0.01)[None, :]
    assert _overlap(far, 0.1) == {"overlap_taken": {}, "overlap_share": 0.0,
                                  "overlap_samples": 80}
