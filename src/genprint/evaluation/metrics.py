"""Open-set attribution metrics, implemented with numpy only (scikit-learn is used for F1 alone).

Conventions used throughout this module:

* **Labels**: known classes are the integers ``0 .. C-1``; ``-1`` means *unknown* (an image from a
  source never seen in training, or the model's answer "unknown").
* **Scores**: one float per image, where a **higher score means more confident that the image
  comes from a known source** (or, for :func:`real_vs_generated_auroc`, that it is real). Scores
  may be ``±inf`` but never NaN.
* **Ties**: tied scores always move together. AUROC counts a tied (positive, negative) pair as
  half a correct ordering, average precision and OSCR evaluate their curves only at distinct score
  values, so no result depends on the order in which tied samples happen to be stored.

Degenerate inputs (no positives or no negatives for a ranking metric) give ``float('nan')`` and
a warning, never a silent 0.5.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "OpenSetMetrics",
    "auroc",
    "average_precision",
    "oscr",
    "real_vs_generated_auroc",
    "tnr_at_tpr",
]

_NAN = float("nan")


# --------------------------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------------------------


def _as_scores(score: ArrayLike, name: str = "score") -> np.ndarray:
    arr = np.asarray(score, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at {int(np.isnan(arr).sum())} position(s): "
                         "every image needs a real-valued score")
    return arr


def _as_bool(mask: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind != "b":
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def _as_labels(labels: ArrayLike, name: str, minimum: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
            raise ValueError(f"{name} must hold integer class labels")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if (arr < minimum).any():
        raise ValueError(f"{name} holds {int(arr.min())}; labels must be >= {minimum}"
                         + (" (-1 means unknown)" if minimum == -1 else ""))
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("arrays must have equal lengths, got "
                         + ", ".join(f"{k}={n}" for k, n in lengths.items()))


def _both_classes(n_pos: int, n_neg: int, what: str, pos: str, neg: str) -> bool:
    """True when both classes are present; otherwise warn that ``what`` is undefined."""
    if n_pos and n_neg:
        return True
    missing = pos if not n_pos else neg
    warnings.warn(f"no {missing} samples: {what} is undefined (returned NaN)", stacklevel=3)
    return False


# --------------------------------------------------------------------------------------------
# ranking metrics
# --------------------------------------------------------------------------------------------


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` (ascending), tied values sharing the mean of their ranks."""
    n = len(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # start index of each run of equal values in the sorted array
    new_run = np.empty(n, dtype=bool)
    new_run[:1] = True
    new_run[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n)  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _distinct_cut_points(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by decreasing score, and the last position of every run of tied scores in it."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    return order, last


def auroc(is_pos: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve for separating positives from negatives by ``score``.

    Higher scores must mean "more positive" (for open-set use: positive = known source, so a
    higher score means more confident the image is known). Computed exactly with the
    Mann–Whitney rank statistic, ties receiving average ranks (a tied positive/negative pair
    counts one half). Returns NaN with a warning if either class is absent.
    """
    pos = _as_bool(is_pos, "is_pos")
    s = _as_scores(score)
    _same_length(is_pos=pos, score=s)
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if not _both_classes(n_pos, n_neg, "AUROC", "positive", "negative"):
        return _NAN
    ranks = _average_ranks(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(is_pos: ArrayLike, score: ArrayLike) -> float:
    """Average precision of ranking positives first by decreasing ``score``.

    Higher scores must mean "more positive" (open-set: positive = known source). This is the
    step-wise sum ``AP = Σ_n (R_n − R_{n−1}) · P_n`` over the distinct score thresholds, taken
    from high to low, without interpolation (the definition scikit-learn's
    ``average_precision_score`` uses). Returns NaN with a warning if either class is absent.
    """
    pos = _as_bool(is_pos, "is_pos")
    s = _as_scores(score)
    _same_length(is_pos=pos, score=s)
    n_pos = int(pos.sum())
    if not _both_classes(n_pos, len(pos) - n_pos, "average precision", "positive", "negative"):
        return _NAN
    order, last = _distinct_cut_points(s)
    tp = np.cumsum(pos[order])[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / n_pos
    d_recall = np.diff(recall, prepend=0.0)
    return float(np.sum(d_recall * precision))


def _threshold_at_tpr(pos_scores: np.ndarray, tpr: float) -> float:
    """The highest threshold ``t`` such that at least ``tpr`` of ``pos_scores`` are ``>= t``."""
    n = len(pos_scores)
    k = math.ceil(tpr * n - 1e-9)  # how many positives must be accepted (tolerate fp rounding)
    k = min(max(k, 1), n)
    return float(np.sort(pos_scores)[::-1][k - 1])


def tnr_at_tpr(is_pos: ArrayLike, score: ArrayLike, tpr: float = 0.95) -> float:
    """True negative rate at the threshold that accepts at least ``tpr`` of the positives.

    Higher scores must mean "more positive" (open-set: positive = known; the result is then the
    fraction of unknown images rejected when 95 % of known images are accepted). The threshold
    ``t`` is the highest score such that at least ``tpr`` of the positive scores are ``>= t``;
    the TNR is the fraction of negative scores strictly below ``t``. Returns NaN with a warning
    if either class is absent.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    pos = _as_bool(is_pos, "is_pos")
    s = _as_scores(score)
    _same_length(is_pos=pos, score=s)
    n_pos = int(pos.sum())
    if not _both_classes(n_pos, len(pos) - n_pos, f"TNR at TPR {tpr:g}", "positive", "negative"):
        return _NAN
    t = _threshold_at_tpr(s[pos], tpr)
    return float(np.mean(s[~pos] < t))


def oscr(y_true: ArrayLike, candidate: ArrayLike, score: ArrayLike) -> float:
    """Open-Set Classification Rate: area under the CCR-versus-FPR curve (Dhamija et al. 2018).

    ``y_true`` holds known classes ``0..C-1`` and ``-1`` for unknown images; ``candidate`` is the
    model's best known class for each image (even when it answered unknown); ``score`` is its
    confidence that the image is known (higher = more known). For every threshold ``t`` over the
    distinct scores, ``CCR(t)`` is the fraction of known images with ``candidate == y_true`` and
    ``score >= t``, and ``FPR(t)`` the fraction of unknown images with ``score >= t``. The curve
    runs from ``(0, 0)`` (threshold above every score) to ``(1, closed-set accuracy)``, and its
    area is taken with the trapezoid rule; tied scores enter the curve together, as one diagonal
    segment. With every candidate correct the OSCR equals the AUROC of known vs unknown. Returns
    NaN with a warning if there are no known or no unknown images.
    """
    y = _as_labels(y_true, "y_true", -1)
    c = _as_labels(candidate, "candidate", 0)
    s = _as_scores(score)
    _same_length(y_true=y, candidate=c, score=s)
    known = y >= 0
    n_known = int(known.sum())
    n_unknown = len(y) - n_known
    if not _both_classes(n_known, n_unknown, "OSCR", "known", "unknown"):
        return _NAN
    correct = known & (c == y)
    order, last = _distinct_cut_points(s)
    ccr = np.concatenate(([0.0], np.cumsum(correct[order])[last] / n_known))
    fpr = np.concatenate(([0.0], np.cumsum(~known[order])[last] / n_unknown))
    return float(np.sum(np.diff(fpr) * (ccr[1:] + ccr[:-1]) / 2.0))


def real_vs_generated_auroc(is_real: ArrayLike, real_score: ArrayLike) -> float:
    """AUROC of telling real images from generated ones, with *real* as the positive class.

    ``real_score`` is the model's per-image score for the real class (higher = more real).
    Returns NaN with a warning if there are no real or no generated images.
    """
    return auroc(is_real, real_score)


# --------------------------------------------------------------------------------------------
# accumulator
# --------------------------------------------------------------------------------------------


class OpenSetMetrics:
    """Accumulates per-image open-set answers and computes every metric at once.

    Call :meth:`update` once or several times (batches are concatenated), then :meth:`compute`.
    Labels: known classes ``0..C-1``, unknown ``-1``. Scores: higher = more confident the image
    comes from a known source.
    """

    def __init__(self) -> None:
        self._y: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []
        self._cand: list[np.ndarray] = []
        self._score: list[np.ndarray] = []
        self._names: list[list[str | None]] = []

    def __len__(self) -> int:
        return sum(len(y) for y in self._y)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        for batches in (self._y, self._pred, self._cand, self._score, self._names):
            batches.clear()

    def update(
        self,
        y_true: ArrayLike,
        pred: ArrayLike,
        candidate: ArrayLike,
        score: ArrayLike,
        source_name: Sequence[str] | None = None,
    ) -> None:
        """Add one batch of answers.

        Args:
            y_true: true label per image (``0..C-1``, or ``-1`` for an unknown-source image).
            pred: the model's answer (``-1`` when it answered unknown).
            candidate: the nearest/argmax known class, even when the answer was unknown.
            score: confidence that the image is from a known source (higher = more known).
            source_name: optional true source name per image, used for per-unknown-source AUROC.

        Raises:
            ValueError: on unequal lengths, non-integer or out-of-range labels, or NaN scores.
        """
        y = _as_labels(y_true, "y_true", -1)
        p = _as_labels(pred, "pred", -1)
        c = _as_labels(candidate, "candidate", 0)
        s = _as_scores(score)
        arrays = {"y_true": y, "pred": p, "candidate": c, "score": s}
        if source_name is not None:
            if isinstance(source_name, str):
                raise ValueError("source_name must be a sequence of names, not a single string")
            names: list[str | None] = [str(n) for n in source_name]
            arrays["source_name"] = np.empty(len(names))
        else:
            names = [None] * len(y)
        _same_length(**arrays)
        self._y.append(y)
        self._pred.append(p)
        self._cand.append(c)
        self._score.append(s)
        self._names.append(names)

    def compute(self) -> dict[str, Any]:
        """All metrics over everything accumulated.

        Returns a dict with ``closed_set_accuracy``, ``macro_f1`` (of ``candidate`` over known
        test images), ``auroc``, ``ap``, ``tnr_at_tpr95``, ``oscr`` (known = positive),
        ``per_unknown_auroc`` (source name -> AUROC of all knowns vs that unknown source; empty
        without source names), at the model's own thresholds ``known_correct`` (share of known
        images given their true source), ``known_called_unknown`` (share of known images
        answered ``unknown``: how often ``unknown`` is a miss of a known source) and
        ``unknown_rejected`` (share of unknown images answered ``unknown``; defined without
        known images too), ``n_known_test`` and
        ``n_unknown_test``. Metrics that are
        undefined (no unknown or no known images) are NaN, with a warning.

        Raises:
            ValueError: if nothing was accumulated.
        """
        if len(self) == 0:
            raise ValueError("OpenSetMetrics.compute() called with no data: call update() with at "
                             "least one test image first")
        y = np.concatenate(self._y)
        p = np.concatenate(self._pred)
        c = np.concatenate(self._cand)
        s = np.concatenate(self._score)
        names = np.array([n for batch in self._names for n in batch], dtype=object)
        known = y >= 0
        n_known = int(known.sum())
        n_unknown = len(y) - n_known

        out: dict[str, Any] = {}
        if n_known:
            from sklearn.metrics import f1_score

            yk, ck = y[known], c[known]
            out["closed_set_accuracy"] = float(np.mean(ck == yk))
            # over every source that is a true label or a candidate (scikit-learn's default): a
            # source with no test image that still takes known images counts, with F1 = 0
            out["macro_f1"] = float(f1_score(yk, ck, labels=np.union1d(yk, ck), average="macro",
                                             zero_division=0))
        else:
            warnings.warn("no known test images: closed-set and open-set metrics are undefined "
                          "(returned NaN)", stacklevel=2)
            out["closed_set_accuracy"] = _NAN
            out["macro_f1"] = _NAN

        if n_known and n_unknown:
            out["auroc"] = auroc(known, s)
            out["ap"] = average_precision(known, s)
            out["tnr_at_tpr95"] = tnr_at_tpr(known, s, 0.95)
            out["oscr"] = oscr(y, c, s)
        else:
            if n_known:  # with no knowns the warning above already covers this
                warnings.warn("no unknown test images: open-set metrics are undefined "
                              "(auroc, ap, tnr_at_tpr95 and oscr are NaN)", stacklevel=2)
            for key in ("auroc", "ap", "tnr_at_tpr95", "oscr"):
                out[key] = _NAN

        per_unknown: dict[str, float] = {}
        unknown_names = sorted({n for n, k in zip(names, known, strict=True)
                                if not k and n is not None})
        for name in unknown_names:
            this = (names == name) & ~known
            if n_known:
                sel = known | this
                per_unknown[name] = auroc(known[sel], s[sel])
            else:
                per_unknown[name] = _NAN
        out["per_unknown_auroc"] = per_unknown
        # at the model's own thresholds (fixed on validation), not at a threshold chosen here
        out["known_correct"] = float(np.mean(p[known] == y[known])) if n_known else _NAN
        out["known_called_unknown"] = float(np.mean(p[known] < 0)) if n_known else _NAN
        out["unknown_rejected"] = float(np.mean(p[~known] < 0)) if n_unknown else _NAN
        out["n_known_test"] = n_known
        out["n_unknown_test"] = n_unknown
        return out
