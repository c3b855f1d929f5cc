"""A leave-one-out self-check of an enrolment of the ``metric`` method (numpy only).

Enrolling a source from a few images sets its reference points and threshold from those images
alone, and how well that works depends on the source: one whose images form a tight cluster in
the embedding is recognised afterwards, one whose images spread as wide as a known source's is
not (docs/metric.md, "Enrolment"). Nothing at enrolment time shows which case it is, except the
images themselves.

The check enrols the source again without each image in turn (same rules: reference points,
threshold, and separator if asked) and attributes the left-out image with the full decision
rule against every other source. The share recognised estimates the recall the analyst can
expect on new images of the source, and the sources that took the others say where its images
go instead. It needs no other data, and leaves the model unchanged.

A second check, :func:`known_overlap`, looks the other way: which of the *other* sources' images
would the new source now take? It runs the full decision rule, after enrolment, on the sample
embeddings the model keeps of its sources (their training and validation images). A source whose
enrolment region covers part of `real` takes a share of those samples, and new real photographs
go with them: on the built-in test split, every enrolment that cost the known sources 2 points
or more had taken some (correlation of share and drop 0.94 and 0.72 over 30 enrolments on the
two benches, docs/metric.md). Most samples are images the reference points were built from,
which lie closer to their own points than new images do, so the share is a floor rather than an
estimate.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from genprint.methods import metric_refs as refs

MAX_CHECK_IMAGES = 30
"""Above this many enrolment images the check is skipped (it costs O(n²) k-means fits, and with
many images the threshold is well estimated anyway)."""


def leave_one_out_check(
    tile_emb: np.ndarray,
    owner: np.ndarray,
    image_emb: np.ndarray,
    *,
    k: int,
    seed: int,
    target_accept: float,
    references: np.ndarray,
    reference_sources: np.ndarray,
    thresholds: np.ndarray,
    enrolled: np.ndarray,
    classes: list[str],
    separators: np.ndarray | None,
    samples: np.ndarray | None,
    scale: float | None = None,
) -> dict[str, Any]:
    """Leave-one-image-out attribution of the enrolment images (see module doc).

    ``thresholds`` are distances (positive) of the existing sources, ``enrolled`` marks those
    that were enrolled, ``separators`` their separators (rows of NaN: none) and ``samples`` the
    sample embeddings to fit a separator for the new source against (``None``: no separator),
    ``scale`` the enrolment rule's factor for one image fewer (``None``: the quantile rule).
    Returns ``{"loo_recall": share or None, "loo_taken_by": {source or "unknown": count}}``.
    """
    n = len(image_emb)
    if n < 3 or n > MAX_CHECK_IMAGES:
        why = "fewer than 3 images" if n < 3 else f"more than {MAX_CHECK_IMAGES} images"
        return {"loo_recall": None, "loo_taken_by": {}, "loo_note": f"not checked: {why}"}
    new = len(classes)
    mask = np.append(np.asarray(enrolled, dtype=bool), True)
    taken: Counter[str] = Counter()
    for i in range(n):
        keep = owner != i
        _, rest_owner = np.unique(owner[keep], return_inverse=True)
        rest_img = np.delete(image_emb, i, axis=0)
        points = refs.enrolment_references(tile_emb[keep], rest_owner, k, seed)
        t, _ = refs.enrolment_threshold(tile_emb[keep], rest_owner, rest_img, k, seed,
                                        target_accept, thresholds, scale)
        all_points = np.concatenate([references, points])
        owners = np.concatenate([reference_sources, np.full(len(points), new)])
        d = refs.source_distances(image_emb[i : i + 1], all_points, owners, new + 1)
        margins = None
        if separators is not None:
            sep = np.full((1, image_emb.shape[1] + 1), np.nan)
            if samples is not None:
                sep[0] = refs.fit_separator(samples, rest_img)
            margins = refs.separator_margins(image_emb[i : i + 1],
                                             np.concatenate([separators, sep]))
        label = int(refs.decide_sources(d, np.append(thresholds, t), mask, margins)[0])
        taken["(recognised)" if label == new else classes[label] if label >= 0 else "unknown"] += 1
    recognised = taken.pop("(recognised)", 0)
    return {"loo_recall": recognised / n, "loo_taken_by": dict(taken.most_common())}


def known_overlap(
    samples: np.ndarray,
    sample_sources: np.ndarray,
    *,
    references: np.ndarray,
    reference_sources: np.ndarray,
    thresholds: np.ndarray,
    enrolled: np.ndarray,
    separators: np.ndarray | None,
    classes: list[str],
    new: int,
) -> dict[str, Any]:
    """Share of each earlier source's stored sample embeddings that source ``new`` takes.

    Every argument describes the model *after* the enrolment of ``new``: reference points and
    their sources, distance thresholds (positive), which sources are enrolled (booleans) and
    their separators (rows of NaN: none). Returns ``{"overlap_taken": {source: share > 0},
    "overlap_share": share of all those samples taken, "overlap_samples": their number}``.
    """
    earlier = np.asarray(sample_sources) != new
    emb, owner = np.asarray(samples)[earlier], np.asarray(sample_sources)[earlier]
    if len(emb) == 0:
        return {"overlap_taken": {}, "overlap_share": 0.0, "overlap_samples": 0}
    d = refs.source_distances(emb, references, reference_sources, len(classes))
    margins = None if separators is None else refs.separator_margins(emb, separators)
    label = refs.decide_sources(d, np.asarray(thresholds), np.asarray(enrolled, bool), margins)
    taken = {}
    for c in np.unique(owner):
        share = float(np.mean(label[owner == c] == new))
        if share > 0:
            taken[classes[int(c)]] = share
    return {"overlap_taken": dict(sorted(taken.items(), key=lambda kv: -kv[1])),
            "overlap_share": float(np.mean(label == new)), "overlap_samples": len(emb)}
