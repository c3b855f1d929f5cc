"""Open-set metrics: hand-worked cases and independent cross-checks against scikit-learn."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from genprint.evaluation.metrics import (
    OpenSetMetrics,
    auroc,
    average_precision,
    oscr,
    real_vs_generated_auroc,
    tnr_at_tpr,
)

KEYS = {"closed_set_accuracy", "macro_f1", "auroc", "ap", "tnr_at_tpr95", "oscr",
        "per_unknown_auroc", "n_known_test", "n_unknown_test", "known_correct",
        "known_called_unknown", "unknown_rejected"}


def _random_open_set(seed: int, n: int = 300, n_classes: int = 4, decimals: int = 1):
    """Random labels/candidates/scores; scores rounded so that many of them tie."""
    rng = np.random.default_rng(seed)
    y = rng.integers(-1, n_classes, n)
    y[:2] = [0, -1]  # both groups present whatever the seed
    cand = np.where(rng.random(n) < 0.7, np.maximum(y, 0), rng.integers(0, n_classes, n))
    score = np.round(rng.normal(size=n) + 0.8 * (y >= 0), decimals)
    pred = np.where(score < 0, -1, cand)
    return y, pred, cand, score


# ------------------------------------------------------------------ AUROC / AP vs scikit-learn


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [0, 1, 3])
def test_auroc_matches_sklearn_with_ties(seed: int, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    is_pos = rng.random(200) < 0.4
    score = np.round(rng.normal(size=200) + is_pos, decimals)
    assert len(np.unique(score)) < 200 or decimals == 3
    assert auroc(is_pos, score) == pytest.approx(roc_auc_score(is_pos, score), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [0, 1, 3])
def test_average_precision_matches_sklearn_with_ties(seed: int, decimals: int) -> None:
    rng = np.random.default_rng(100 + seed)
    is_pos = rng.random(150) < 0.3
    score = np.round(rng.normal(size=150) + is_pos, decimals)
    assert average_precision(is_pos, score) == pytest.approx(
        average_precision_score(is_pos, score), abs=1e-12)


def test_auroc_and_ap_small_cases() -> None:
    assert auroc([1, 1, 0, 0], [4, 3, 2, 1]) == 1.0
    assert auroc([1, 1, 0, 0], [1, 2, 3, 4]) == 0.0
    assert auroc([1, 0, 1, 0], [5, 5, 5, 5]) == 0.5  # all tied: every pair counts one half
    # ranking pos, neg, pos: P@1 = 1 (recall 1/2), P@3 = 2/3 (recall 1) -> AP = 1/2 + 1/3
    assert average_precision([1, 0, 1], [3, 2, 1]) == pytest.approx(0.5 + 1 / 3)
    # one tie group holding everything: a single threshold, precision = prevalence
    assert average_precision([1, 0, 0, 0], [1, 1, 1, 1]) == pytest.approx(0.25)


def test_real_vs_generated_auroc_matches_sklearn() -> None:
    rng = np.random.default_rng(7)
    is_real = rng.random(120) < 0.5
    real_score = np.round(rng.random(120) * 0.6 + 0.4 * is_real, 1)  # heavy ties
    assert real_vs_generated_auroc(is_real, real_score) == pytest.approx(
        roc_auc_score(is_real, real_score), abs=1e-12)


def test_ranking_metric_with_one_class_is_nan_and_warns() -> None:
    with pytest.warns(UserWarning, match="no negative samples"):
        assert math.isnan(auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.warns(UserWarning, match="no positive samples"):
        assert math.isnan(average_precision([0, 0], [0.1, 0.2]))


# ---------------------------------------------------------------------------------- OSCR


def test_oscr_hand_worked() -> None:
    # knowns: (score 0.9, correct), (0.7, wrong), (0.5, correct); unknowns: 0.8, 0.3.
    # Threshold sweep, high to low, as (FPR, CCR):
    #   t=+inf (0, 0) -> t=0.9 (0, 1/3) -> t=0.8 (1/2, 1/3) -> t=0.7 (1/2, 1/3)
    #   -> t=0.5 (1/2, 2/3) -> t=0.3 (1, 2/3).
    # Area: FPR 0..1/2 at CCR 1/3 = 1/6, FPR 1/2..1 at CCR 2/3 = 1/3; total 1/2.
    y = [0, 1, 2, -1, -1]
    cand = [0, 0, 2, 1, 0]
    score = [0.9, 0.7, 0.5, 0.8, 0.3]
    assert oscr(y, cand, score) == pytest.approx(0.5)


def test_oscr_ties_move_together() -> None:
    # knowns (both correct): 0.9 and 0.6; unknowns: 0.6 and 0.2. The known and the unknown at
    # 0.6 enter the curve together: (0, 0) -> t=0.9 (0, 1/2) -> t=0.6 (1/2, 1) -> t=0.2 (1, 1).
    # Area: vertical step, then trapezoid 1/2 * (1/2 + 1) / 2 = 3/8, then 1/2 * 1 -> 7/8.
    # (Breaking the tie one way would give 3/4, the other way 1.)
    y = [0, 1, -1, -1]
    cand = [0, 1, 0, 0]
    score = [0.9, 0.6, 0.6, 0.2]
    assert oscr(y, cand, score) == pytest.approx(7 / 8)
    # storage order of tied samples does not matter
    perm = [2, 3, 1, 0]
    assert oscr(np.take(y, perm), np.take(cand, perm), np.take(score, perm)) == pytest.approx(7 / 8)


def test_oscr_is_one_for_perfect_separation_and_correct_candidates() -> None:
    y = [0, 1, 2, 1, -1, -1, -1]
    score = [0.9, 0.8, 0.99, 0.7, 0.1, 0.2, 0.3]
    assert oscr(y, [0, 1, 2, 1, 0, 0, 2], score) == pytest.approx(1.0)
    # perfect separation but one of four candidates wrong: CCR tops out at 3/4
    assert oscr(y, [0, 1, 2, 0, 0, 0, 2], score) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(5))
def test_oscr_equals_auroc_when_every_candidate_is_correct(seed: int) -> None:
    y, _, _, score = _random_open_set(seed, decimals=1)
    cand = np.maximum(y, 0)  # every known image gets its true class
    assert oscr(y, cand, score) == pytest.approx(auroc(y >= 0, score), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_oscr_bounded_by_auroc_and_accuracy(seed: int) -> None:
    y, _, cand, score = _random_open_set(seed, decimals=1)
    known = y >= 0
    value = oscr(y, cand, score)
    assert 0.0 <= value <= auroc(known, score) + 1e-12
    assert value <= np.mean(cand[known] == y[known]) + 1e-12
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    assert oscr(y[perm], cand[perm], score[perm]) == pytest.approx(value, abs=1e-12)


# ---------------------------------------------------------------------------------- TNR@TPR


def test_tnr_at_tpr95_hand_worked() -> None:
    # 20 knowns scored 1..20: accepting at least 95 % means 19 of them, so the threshold is the
    # 19th highest score, 2. Unknowns 1, 1.5, 2, 3: strictly below 2 are 1 and 1.5 -> TNR 1/2.
    known = np.arange(1.0, 21.0)
    unknown = np.array([1.0, 1.5, 2.0, 3.0])
    is_pos = np.r_[np.ones(20, bool), np.zeros(4, bool)]
    assert tnr_at_tpr(is_pos, np.r_[known, unknown]) == pytest.approx(0.5)
    # 10 knowns: 95 % of 10 = 9.5 -> all 10 must be accepted, threshold = lowest known (1)
    is_pos = np.r_[np.ones(10, bool), np.zeros(4, bool)]
    assert tnr_at_tpr(is_pos, np.r_[np.arange(1.0, 11.0), [0.5, 1.0, 0.9, 5.0]]) == 0.5
    # tpr=0.5 on knowns 1..10: 5 accepted, threshold 6; unknowns below 6: 3 of 4
    assert tnr_at_tpr(is_pos, np.r_[np.arange(1.0, 11.0), [0.5, 1.0, 5.9, 6.0]], 0.5) == 0.75


def test_tnr_at_tpr_rejects_bad_tpr() -> None:
    with pytest.raises(ValueError, match="tpr"):
        tnr_at_tpr([1, 0], [1.0, 0.0], tpr=0.0)


# ---------------------------------------------------------------------------------- accumulator


def test_compute_matches_functions_and_sklearn() -> None:
    y, pred, cand, score = _random_open_set(3)
    m = OpenSetMetrics()
    m.update(y, pred, cand, score)
    out = m.compute()
    assert set(out) == KEYS
    known = y >= 0
    assert out["n_known_test"] == int(known.sum())
    assert out["n_unknown_test"] == int((~known).sum())
    assert out["closed_set_accuracy"] == pytest.approx(accuracy_score(y[known], cand[known]))
    assert out["macro_f1"] == pytest.approx(f1_score(y[known], cand[known], average="macro"))
    assert out["auroc"] == pytest.approx(roc_auc_score(known, score))
    assert out["ap"] == pytest.approx(average_precision_score(known, score))
    assert out["tnr_at_tpr95"] == tnr_at_tpr(known, score)
    assert out["oscr"] == oscr(y, cand, score)
    assert out["per_unknown_auroc"] == {}
    # a source with no known test image that still takes some (e.g. an enrolled one) counts
    m = OpenSetMetrics()
    y2, c2 = np.array([0, 0, 1, 1, -1]), np.array([0, 2, 1, 1, 0])
    m.update(y2, c2, c2, np.arange(5.0))
    f1 = m.compute()["macro_f1"]
    assert f1 == pytest.approx(f1_score(y2[:4], c2[:4], average="macro"))
    assert f1 == pytest.approx((2 / 3 + 1 + 0) / 3)  # before: (2/3 + 1) / 2, source 2 ignored
    assert out["known_correct"] == pytest.approx(np.mean(pred[known] == y[known]))
    assert out["unknown_rejected"] == pytest.approx(np.mean(pred[~known] == -1))


def test_operating_point_shares() -> None:
    m = OpenSetMetrics()
    # knowns: right, wrong source, rejected; unknowns: rejected, accepted as 0
    m.update([0, 1, 1, -1, -1], [0, 0, -1, -1, 0], [0, 0, 1, 0, 0], [0.9, 0.8, 0.2, 0.1, 0.7])
    out = m.compute()
    assert out["known_correct"] == pytest.approx(1 / 3)
    assert out["known_called_unknown"] == pytest.approx(1 / 3)  # the third known image
    assert out["unknown_rejected"] == pytest.approx(1 / 2)
    only_unknown = OpenSetMetrics()
    only_unknown.update([-1, -1], [-1, 2], [0, 2], [0.1, 0.9])
    with pytest.warns(UserWarning):
        out = only_unknown.compute()
    assert out["unknown_rejected"] == 0.5 and np.isnan(out["known_correct"])


def test_closed_set_uses_candidate_not_pred() -> None:
    m = OpenSetMetrics()
    # every known image rejected (pred=-1) but its candidate is right
    m.update([0, 1, -1], [-1, -1, -1], [0, 1, 0], [0.2, 0.3, 0.1])
    out = m.compute()
    assert out["closed_set_accuracy"] == 1.0
    assert out["macro_f1"] == 1.0


def test_several_updates_equal_one_call() -> None:
    y, pred, cand, score = _random_open_set(11)
    names = [f"src{v}" if v < 0 else f"k{v}" for v in y]
    names = [n if k % 3 else "other_gen" for k, n in enumerate(names)]
    one = OpenSetMetrics()
    one.update(y, pred, cand, score, source_name=names)
    many = OpenSetMetrics()
    for a, b in [(0, 50), (50, 51), (51, 51), (51, 200), (200, len(y))]:
        many.update(y[a:b], pred[a:b], cand[a:b], score[a:b], source_name=names[a:b])
    assert len(many) == len(y)
    assert many.compute() == one.compute()


def test_per_unknown_auroc_per_source() -> None:
    # knowns 0.5, 0.6, 0.7; gen_a scores all below (AUROC 1); gen_b ties/above some knowns.
    y = [0, 1, 0, -1, -1, -1, -1]
    score = [0.5, 0.6, 0.7, 0.1, 0.2, 0.6, 0.9]
    names = ["k0", "k1", "k0", "gen_a", "gen_a", "gen_b", "gen_b"]
    m = OpenSetMetrics()
    m.update(y, [0, 1, 0, -1, -1, 1, 0], [0, 1, 0, 0, 0, 1, 0], score, source_name=names)
    per = m.compute()["per_unknown_auroc"]
    assert set(per) == {"gen_a", "gen_b"}
    assert per["gen_a"] == 1.0
    # gen_b: 0.6 beats 0.5, ties 0.6, loses to 0.7 -> 1 + 0.5 + 0 ; 0.9 beats every known -> 0
    # knowns ahead of it in 1.5 of 6 pairs -> 1.5 / 6 = 0.25
    assert per["gen_b"] == pytest.approx(0.25)
    is_pos = np.array([1, 1, 1, 0, 0]) == 1
    assert per["gen_b"] == pytest.approx(roc_auc_score(is_pos, [0.5, 0.6, 0.7, 0.6, 0.9]))


def test_all_known_gives_nan_open_set_metrics_and_warns() -> None:
    m = OpenSetMetrics()
    m.update([0, 1, 1], [0, 1, 0], [0, 1, 0], [0.9, 0.8, 0.4])
    with pytest.warns(UserWarning, match="no unknown test images: open-set metrics are undefined"):
        out = m.compute()
    for key in ("auroc", "ap", "tnr_at_tpr95", "oscr"):
        assert math.isnan(out[key]), key
    assert out["closed_set_accuracy"] == pytest.approx(2 / 3)
    assert out["n_unknown_test"] == 0


def test_all_unknown_gives_nan_everywhere_and_warns() -> None:
    m = OpenSetMetrics()
    m.update([-1, -1], [-1, 0], [1, 0], [0.1, 0.7], source_name=["gen_a", "gen_b"])
    with pytest.warns(UserWarning, match="no known test images"):
        out = m.compute()
    for key in ("closed_set_accuracy", "macro_f1", "auroc", "ap", "tnr_at_tpr95", "oscr"):
        assert math.isnan(out[key]), key
    assert all(math.isnan(v) for v in out["per_unknown_auroc"].values())
    assert out["n_known_test"] == 0 and out["n_unknown_test"] == 2


def test_normal_case_emits_no_warning() -> None:
    y, pred, cand, score = _random_open_set(5)
    m = OpenSetMetrics()
    m.update(y, pred, cand, score)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.compute()


def test_empty_accumulator_raises() -> None:
    with pytest.raises(ValueError, match="no data"):
        OpenSetMetrics().compute()
    m = OpenSetMetrics()
    m.update([], [], [], [])
    with pytest.raises(ValueError, match="no data"):
        m.compute()


def test_nan_score_raises() -> None:
    m = OpenSetMetrics()
    with pytest.raises(ValueError, match="NaN"):
        m.update([0, -1], [0, -1], [0, 0], [0.5, float("nan")])
    assert len(m) == 0  # the bad batch was not kept
    with pytest.raises(ValueError, match="NaN"):
        auroc([1, 0], [float("nan"), 0.0])
    with pytest.raises(ValueError, match="NaN"):
        oscr([0, -1], [0, 0], [0.1, float("nan")])


def test_bad_inputs_raise() -> None:
    m = OpenSetMetrics()
    with pytest.raises(ValueError, match="equal lengths"):
        m.update([0, 1], [0, 1], [0, 1], [0.5])
    with pytest.raises(ValueError, match="equal lengths"):
        m.update([0, 1], [0, 1], [0, 1], [0.5, 0.4], source_name=["a"])
    with pytest.raises(ValueError, match="y_true"):
        m.update([0, -2], [0, 1], [0, 1], [0.5, 0.4])
    with pytest.raises(ValueError, match="candidate"):
        m.update([0, -1], [0, -1], [0, -1], [0.5, 0.4])
