"""Setting a trained model's thresholds again, from validation images under given conditions.

A model's thresholds are set at training on clean validation images: each source accepts 95%
of them (:mod:`genprint.methods.thresholds`). Images in the wild are often re-saved (JPEG) or
processed, which moves their scores away from every source; a threshold set on clean images
then calls most of them ``unknown`` (``genprint eval --perturb`` measures it). Recalibrating
applies **the same rule** to the same kind of held-out images, seen under the conditions the
model will meet (e.g. clean and JPEG 75, pooled): each source's threshold then accepts 95% of
its validation images under that mix. Nothing else changes — not the network, not the reference
points, not the decision rule — and the cost is measured the same way: a wider threshold also
accepts more images of unseen generators. A recalibrated model is a new model (its card records
the conditions and the previous thresholds; its ``model_sha256`` differs).

Any method whose answers compare ``scores[candidate]`` with ``thresholds_[candidate]``
(higher = more like; ``metric``, ``baseline``, ``probe``: :attr:`~genprint.methods.base.
Attributor.thresholds_from_validation`) can be recalibrated; ``invert`` tests a p-value at its
level α and is refused. Enrolled sources keep their thresholds (set from the enrolment images
by the enrolment rule), and so do sources without validation images here. ``metric``'s optional unseen-origin rule for ``real`` is not re-applied: under
recalibration every source gets the plain rule.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from genprint.methods.base import Attributor
from genprint.methods.thresholds import score_threshold

CHUNK = 256
"""Images attributed per call when scoring (bounded memory for the method's work arrays)."""


def recalibrations(attributor: Attributor) -> list[list[str]]:
    """The conditions of each recalibration of ``attributor``'s thresholds, oldest first (an
    empty list: its thresholds are as trained)."""
    info = getattr(attributor, "training_info_", None) or {}
    return [list(r.get("conditions") or []) for r in info.get("recalibrated") or []]


def own_scores(attributor: Attributor, images: Sequence[np.ndarray],
               labels: Sequence[str]) -> dict[str, list[float]]:
    """Each known source's score for its own images among ``images`` (labels outside the
    model's classes are ignored; images the model cannot use, e.g. too small, are left out)."""
    classes = list(attributor.classes_)
    keep = [i for i, lab in enumerate(labels) if lab in classes]
    out: dict[str, list[float]] = {c: [] for c in classes}
    if not keep:
        return out
    for start in range(0, len(keep), CHUNK):
        part = keep[start : start + CHUNK]
        for i, result in zip(part, attributor.attribute_arrays([images[i] for i in part]),
                             strict=True):
            if result.ok:
                out[labels[i]].append(float(result.scores[labels[i]]))
    return out


def recalibrate(attributor: Attributor, images: Sequence[np.ndarray], labels: Sequence[str],
                conditions: Sequence[str], *, min_images: int = 1,
                target_accept: float | None = None) -> dict[str, Any]:
    """Set the thresholds of ``attributor``'s sources again from ``images`` (its sources'
    held-out images, already under ``conditions``, named for the record): see
    :func:`recalibrate_from_scores`. ValueError if ``images`` and ``labels`` differ in length."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    check_recalibratable(attributor)
    record = recalibrate_from_scores(attributor, own_scores(attributor, images, labels),
                                     conditions, min_images=min_images,
                                     target_accept=target_accept)
    count_images(record, labels)
    return record


def count_images(record: dict[str, Any], labels: Sequence[str]) -> None:
    """Add each source's number of images (``labels`` of the images scored) to ``record``."""
    for name, entry in record["sources"].items():
        entry["n_images"] = sum(lab == name for lab in labels)


def check_recalibratable(attributor: Attributor) -> None:
    """ValueError for a method whose thresholds do not come from validation images."""
    if not attributor.thresholds_from_validation:
        raise ValueError(f"method {attributor.method!r} does not set its thresholds from "
                         "validation images (invert tests a p-value at its level alpha, "
                         "calibrated by `genprint verify calibrate`); there is nothing to "
                         "recalibrate")


def recalibrate_from_scores(attributor: Attributor, scores: dict[str, list[float]],
                            conditions: Sequence[str], *, min_images: int = 1,
                            target_accept: float | None = None) -> dict[str, Any]:
    """Set each trained source's threshold from ``scores`` (its own held-out images' scores,
    e.g. from :func:`own_scores` under every condition, pooled) by the training rule at the
    model's ``target_accept``: the threshold accepts that share of the pooled scores (a
    quantile of the mixture of conditions, each image counted once per condition). With
    ``target_accept`` given, that share instead, and it becomes the model's (a later
    enrolment follows it too).

    A source with fewer than ``min_images`` scores keeps its threshold, and so does every
    enrolled source (``metric``): its threshold comes from its enrolment images by the
    enrolment rule, and held-out images of it would be the user's own, not the model's
    validation set. Returns the record also appended to ``training_info_["recalibrated"]``:
    the conditions and, per source, the scores used, the thresholds before and after, and why a
    source was left as it was.

    ValueError for a method whose thresholds do not come from validation images (``invert``)
    or when no source can be recalibrated.
    """
    check_recalibratable(attributor)
    target = float(getattr(attributor, "target_accept", 0.95) if target_accept is None
                   else target_accept)
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target_accept must be in (0, 1], got {target}")
    before = np.asarray(attributor.thresholds_, dtype=np.float64)
    after = before.copy()
    enrolled = set(getattr(attributor, "enrolled_sources", ()) or ())
    per_source: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(attributor.classes_):
        mine = scores.get(name, [])
        entry: dict[str, Any] = {"n_scores": len(mine), "before": float(before[k])}
        if name in enrolled:
            entry["kept_because"] = "enrolled (its threshold follows the enrolment rule)"
        elif len(mine) < min_images:
            entry["kept_because"] = f"fewer than {min_images} score(s)"
        else:
            after[k] = score_threshold(np.array(mine), target)
        entry["after"] = float(after[k])
        entry["recalibrated"] = "kept_because" not in entry
        per_source[name] = entry
    if not any(s["recalibrated"] for s in per_source.values()):
        raise ValueError(f"none of the model's trained sources "
                         f"({', '.join(c for c in attributor.classes_ if c not in enrolled)}) "
                         f"has at least {min_images} score(s) to recalibrate on")
    record = {"recalibrated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "model_sha256_before": getattr(attributor, "model_sha256_", None),
              "conditions": list(conditions), "target_accept": target,
              "target_accept_before": float(getattr(attributor, "target_accept", 0.95)),
              "sources": per_source}
    info = dict(getattr(attributor, "training_info_", {}) or {})
    done = {s for s, e in per_source.items() if e["recalibrated"]}
    unseen = [s for s in info.get("thresholds_for_unseen_origins") or [] if s in done]
    if unseen:  # metric: these thresholds now follow the plain rule
        record["unseen_origin_rule_replaced_for"] = unseen
        info["thresholds_for_unseen_origins"] = [
            s for s in info["thresholds_for_unseen_origins"] if s not in done]
    attributor.thresholds_ = after
    if hasattr(attributor, "target_accept"):
        attributor.target_accept = target  # type: ignore[attr-defined]
    attributor.model_sha256_ = None  # no saved model holds these thresholds until saved
    info["recalibrated"] = [*info.get("recalibrated", []), record]
    rule = str(info.get("threshold_rule") or "").split("; recalibrated")[0]
    info["threshold_rule"] = (f"{rule}; recalibrated under {', '.join(conditions)} to accept "
                              f"{target:.0%} of the pooled scores, for "
                              f"{', '.join(sorted(done))} (see recalibrated)").lstrip("; ")
    attributor.training_info_ = info
    return record
