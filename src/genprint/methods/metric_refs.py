"""Reference points, distances and thresholds of the ``metric`` method (numpy only).

Embeddings and reference points are unit vectors; the distance between them is Euclidean
(``√(2 − 2 cos)``, in [0, 2]). A source's score for an image is minus the distance to the nearest
of that source's reference points, so higher = closer, as the Attributor interface wants.

Thresholds are distances: source ``k`` accepts an image within ``t_k`` of its nearest reference
point of ``k``, where ``t_k`` is the finite-sample ``target_accept`` quantile of the distances of
``k``'s validation images (:func:`acceptance_threshold`: a new image like them is accepted with
probability ≥ 95%, or as close to it as the number of held-out images allows). For a source whose images
come from several named origins (real images: cameras), the distances can be measured as if
each image's origin were unseen (:func:`unseen_origin_distances`), so that the threshold also
accepts ≈ 95% of images from origins that training never saw.

Enrolling a new source without retraining (see :func:`enrolment_references` and
:func:`enrolment_threshold`):

* **reference points**, by the rule of the trained sources: k-means centroids of the new images'
  embeddings (tile embeddings averaged per image), with K = ``refs_per_class`` capped at the
  number of images — so with K or fewer images, every image's embedding is a reference point;
* **threshold**, aiming at the trained sources' acceptance (95%) on new images:
  - ≥ 3 images: leave-one-image-out — each image's embedding against the reference points built
    from the other images. While the 95% quantile of n such distances is their largest (n ≤ 38
    at 95%), the threshold is R × their mean, where the factor R is found by simulating
    enrolments of the same number of images on the trained sources' validation images
    (:func:`enrolment_scale`: the smallest R at which they accept 95% of their other images on
    average). The largest of n distances accepts only ≈ n/(n + 1) of new images on average and
    swings with the draw; a mean varies far less, and R borrows the shape of the distance law
    from sources with many images. With more images, or without validation samples to simulate
    on (models saved before they were marked, or too few of them), the threshold is
    :func:`acceptance_threshold` of the distances;
  - 1–2 images with ≥ 3 tiles in all: leave-one-tile-out — each tile against the reference points
    built from the other tiles (tile embeddings are noisier than image embeddings, so this errs
    towards accepting);
  - fewer than 3 tiles: the median of the existing sources' thresholds.
* **separator** (opt-in, ``separator=True``; needs the sample embeddings a model keeps): a linear
  one-against-the-rest classifier in the embedding (:func:`fit_separator`: L2-regularised
  logistic regression, C = :data:`SEPARATOR_C`, classes weighted to balance, fitted on the new
  images against the stored samples of every other source). On unit embeddings
  ``w·x + b > 0`` is a spherical cap, so the separator claims a bounded region around the new
  images, shaped by where the known sources are rather than by 10 distances alone. An image
  that the distance rule leaves ``unknown`` goes to an enrolled source whose separator claims
  it (:func:`decide_sources`); a separator never changes any other answer, so it cannot take a
  known source's accepted image (a real photograph, say) away from it.

The rule was chosen on validation data only (``benchmarks/metric_validation.py``: known sources
held out in turn and enrolled from 10 images): one point per image gave a higher recall of the
enrolled source than a single averaged point, for a small loss on the other sources; the
finite-sample quantile (the largest of 10 held-out distances rather than the interpolated 95%
quantile) raised the mean enrolment recall by ≈ 0.03 at no cost to the other sources; the scaled
mean then raised it from 0.87–0.91 to 0.92–0.96 over four validation runs (enrolments meeting
recall ≥ 0.90 with a drop < 2 points: 76 → 96 of 120), and the other held-out generator's images
taken by the new source fell (0.000–0.033 → 0.000 on average; the largest of 10 distances
sometimes rests on one stray image: up to 0.98 of them in one enrolment); the
separator raised it from 0.87–0.91 to 0.90–0.94 over four validation runs (enrolments meeting
recall ≥ 0.90 with a drop < 2 points: 56 → 81 of 120), with the other sources unchanged by
construction. (Letting a claim also override a trained source's answer recalled more on
validation but handed real images of unseen cameras to the new source, there and on the test
split: docs/metric.md, "Enrolment".)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genprint.methods.thresholds import distance_threshold

SEPARATOR_C = 10.0
"""Inverse L2 strength of an enrolled source's separator. Chosen on the validation folds among
1, 10, 30, 100, 300 and 1000: recall did not depend on it (0.90–0.94 in every run), and C ≤ 10
let the fewest of another held-out generator's images be taken; 10 is the tighter of those."""

SCALE_DRAWS = 20
"""Simulated enrolments per known source for :func:`enrolment_scale`, at most (fewer when
:data:`SCALE_FIT_BUDGET` would be exceeded)."""

SCALE_FIT_BUDGET = 1600
"""The budget of :func:`enrolment_scale`, in leave-one-out fits (one k-means each beyond K
images): with n images, at most ``SCALE_FIT_BUDGET // n`` simulated enrolments (160 for 10
images; 140 with the built-in bench's 7 sources, 20 each), spread evenly over the sources, or
one each for as many randomly chosen sources as the budget allows (at least one draw). Each
draw also fits its reference points once, so the fits are about n + 1 per draw. On one core,
10 images take ≈ 10 s."""

SCALE_MIN_SPREAD = 1e-6
"""A simulated enrolment whose mean leave-one-out distance is below this (identical images)
says nothing about the spread and is left out."""

SCALE_MIN_REST = 5
"""A known source takes part in :func:`enrolment_scale` only with this many validation images
beyond the enrolled ones, to measure the acceptance on. (The mean acceptance over draws is
unbiased for any number; leaving a source out biases the factor towards the others' shapes: with
10, the validation run holding out two cameras left `real`, the widest source, out, 19
calibration images, and met the target in 18 of 30 enrolments instead of 20.)"""

SAMPLES_PER_SOURCE = 1000
"""At most this many sample embeddings per source are kept in a model for fitting separators."""


def normalise(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    v = np.asarray(v, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def distances(embeddings: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Euclidean distances (N×R, float64) between unit embeddings and unit reference points.

    ``sqrt(|e|² + |r|² − 2 e·r)`` in float64, the products summed by ``einsum``'s own loop, so
    an image's distances do not depend on the other rows of the call (a BLAS matrix product may
    block the sum differently for another number of rows) and are exact to ~1e-8 (in float32
    the same formula is off by up to ~3e-5, enough to move an image that sits exactly on a
    threshold across it)."""
    e = np.asarray(embeddings, dtype=np.float64)
    r = np.asarray(references, dtype=np.float64)
    ee = np.einsum("nd,nd->n", e, e)[:, None]
    rr = np.einsum("rd,rd->r", r, r)[None, :]
    return np.sqrt(np.maximum(ee + rr - 2.0 * np.einsum("nd,rd->nr", e, r), 0.0))


def source_distances(embeddings: np.ndarray, references: np.ndarray,
                     reference_sources: np.ndarray, n_sources: int) -> np.ndarray:
    """Distance (N×n_sources) from each embedding to the nearest reference point of each source."""
    d = distances(embeddings, references)
    out = np.full((len(embeddings), n_sources), np.inf, dtype=np.float64)
    for k in range(n_sources):
        mask = reference_sources == k
        if mask.any():
            out[:, k] = d[:, mask].min(axis=1)
    return out


def kmeans_references(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` normalised k-means centroids of unit embeddings (fewer if there are fewer points)."""
    embeddings = normalise(embeddings)
    k = min(k, len(embeddings))
    if k <= 1:
        return normalise(embeddings.mean(axis=0, keepdims=True))
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(embeddings)
    return normalise(km.cluster_centers_)


def class_references(embeddings: np.ndarray, labels: np.ndarray, n_classes: int, k: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K k-means reference points per class: (points R×D, their class R)."""
    points, owners = [], []
    for c in range(n_classes):
        refs = kmeans_references(embeddings[labels == c], k, seed)
        points.append(refs)
        owners.append(np.full(len(refs), c, dtype=np.int64))
    return np.concatenate(points), np.concatenate(owners)


def acceptance_threshold(held_out: np.ndarray, target_accept: float) -> float:
    """The distance threshold that accepts a share ``target_accept`` of new images like
    ``held_out``: :func:`genprint.methods.thresholds.distance_threshold`, the rule every method
    uses."""
    return distance_threshold(held_out, target_accept)


def calibrate_thresholds(own_distances: np.ndarray, labels: np.ndarray, n_classes: int,
                         target_accept: float) -> np.ndarray:
    """Per-class distance thresholds from each class's distances to its own nearest reference
    point (validation data only), by :func:`acceptance_threshold`."""
    if not 0.0 < target_accept <= 1.0:
        raise ValueError(f"target_accept must be in (0, 1], got {target_accept}")
    out = np.empty(n_classes, dtype=np.float64)
    for c in range(n_classes):
        d = own_distances[labels == c]
        if len(d) == 0:
            raise ValueError(f"class {c} has no validation images to calibrate its threshold")
        out[c] = acceptance_threshold(d, target_accept)
    return out


def unseen_origin_distances(val_emb: np.ndarray, val_origins: Sequence[str | None],
                            train_emb: np.ndarray, train_origins: Sequence[str | None], k: int,
                            seed: int) -> np.ndarray | None:
    """Distances of one source's validation images as if their origin were unseen.

    Each validation image of origin ``o`` is measured against ``k`` k-means reference points
    built from the source's training images of the *other* origins. Returns ``None`` when this
    cannot be done (an image without origin, fewer than two training origins, or an origin with
    nothing else to compare against), and the caller keeps the ordinary distances.
    """
    train_o = np.array([o or "" for o in train_origins], dtype=object)
    if any(o is None for o in val_origins) or len(set(train_o) - {""}) < 2:
        return None
    out = np.empty(len(val_emb), dtype=np.float64)
    cache: dict[str, np.ndarray] = {}
    for i, o in enumerate(val_origins):
        if o not in cache:
            others = train_emb[train_o != o]
            if len(others) == 0:
                return None
            cache[o] = kmeans_references(others, k, seed)  # type: ignore[index]
        out[i] = distances(val_emb[i : i + 1], cache[o]).min()  # type: ignore[index]
    return out


def image_embeddings(tile_embeddings: np.ndarray, tile_owner: np.ndarray,
                     n_images: int | None = None) -> np.ndarray:
    """Per-image embeddings: the normalised mean of each image's tiles.

    With ``n_images``, row ``i`` is image ``i`` (owners are 0 … n−1); without it, one row per
    distinct owner in increasing order (owners may have gaps, e.g. after leaving one out).
    """
    if n_images is None:
        _, tile_owner = np.unique(tile_owner, return_inverse=True)
        n_images = int(tile_owner.max()) + 1 if len(tile_owner) else 0
    sums = np.zeros((n_images, tile_embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, tile_owner, tile_embeddings)
    return normalise(sums)


def enrolment_references(tile_embeddings: np.ndarray, tile_owner: np.ndarray, k: int,
                         seed: int) -> np.ndarray:
    """Reference points of a new source from its tile embeddings and the image of each tile:
    k-means of the image embeddings with min(K, images) centroids (rule in the module doc)."""
    images = image_embeddings(tile_embeddings, tile_owner)
    if len(images) <= k:
        return images
    return kmeans_references(images, k, seed)


def leave_one_image_out(tile_embeddings: np.ndarray, tile_owner: np.ndarray,
                        image_embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each image's distance to the reference points built from the other images' tiles."""
    held = []
    for i in range(len(image_embeddings)):
        rest = tile_owner != i
        refs = enrolment_references(tile_embeddings[rest], tile_owner[rest], k, seed)
        held.append(distances(image_embeddings[i : i + 1], refs).min())
    return np.array(held, dtype=np.float64)


def enrolment_threshold(tile_embeddings: np.ndarray, tile_owner: np.ndarray,
                        image_embeddings: np.ndarray, k: int, seed: int, target_accept: float,
                        existing_thresholds: np.ndarray, scale: float | None = None
                        ) -> tuple[float, str]:
    """Distance threshold of a new source and the rule that set it (see module doc).

    ``scale`` (from :func:`enrolment_scale` for this number of images): with ≥ 3 images the
    threshold is ``scale`` × the mean leave-one-image-out distance; ``None``: the
    finite-sample ``target_accept`` quantile of those distances."""
    n_images = len(image_embeddings)
    if n_images >= 3:
        held = leave_one_image_out(tile_embeddings, tile_owner, image_embeddings, k, seed)
        if scale is not None:
            return float(scale * held.mean()), "leave-one-image-out, scaled mean"
        return acceptance_threshold(held, target_accept), "leave-one-image-out"
    if len(tile_embeddings) >= 3:
        held = []
        for t in range(len(tile_embeddings)):
            refs = enrolment_references(np.delete(tile_embeddings, t, axis=0),
                                        np.delete(tile_owner, t), k, seed)
            held.append(distances(tile_embeddings[t : t + 1], refs).min())
        return acceptance_threshold(np.array(held), target_accept), "leave-one-tile-out"
    if len(existing_thresholds) == 0:
        raise ValueError("too few tiles to set a threshold and no existing source to borrow from")
    return float(np.median(existing_thresholds)), "median of existing thresholds"


def enrolment_scale(embeddings: np.ndarray, labels: np.ndarray, n_images: int, k: int,
                    seed: int, target_accept: float, draws: int = SCALE_DRAWS,
                    fit_budget: int = SCALE_FIT_BUDGET) -> tuple[float | None, int, str]:
    """The factor of the scaled-mean enrolment rule for ``n_images`` images, from simulated
    enrolments of the known sources' validation images (``embeddings``, source ``labels``).

    Sources with at least ``n_images`` + :data:`SCALE_MIN_REST` images take part: each gets
    ``draws`` random draws of ``n_images`` of its images, fewer if that would exceed
    ``fit_budget`` leave-one-out fits in all (then one draw each for as many randomly chosen
    sources as the budget allows). Each draw is enrolled by the rule (reference points; mean
    leave-one-image-out distance m), and the source's other images are measured against the new
    points (distances d). The factor is the smallest R at which the mean over draws of the
    share of d within R·m reaches ``target_accept`` — what the trained sources' thresholds give
    their own images; every draw weighs the same, whatever the number of its other images.
    Returns (R, number of draws, how many sources took part, in words), or (None, 0, why
    not)."""
    labels = np.asarray(labels)
    if draws < 1:
        raise ValueError(f"draws must be ≥ 1, got {draws}")
    if n_images < 3:
        return None, 0, "fewer than 3 images: no leave-one-image-out distances"
    eligible = [c for c in np.unique(labels) if np.sum(labels == c) >= n_images + SCALE_MIN_REST]
    if not eligible:
        return None, 0, (f"no trained source has {n_images + SCALE_MIN_REST} validation samples "
                         "to simulate enrolments of this size")
    rng = np.random.default_rng(seed)
    per_source = min(draws, fit_budget // (n_images * len(eligible)))
    if per_source >= 1:
        plan = [c for c in eligible for _ in range(per_source)]
    else:  # too many sources for a draw each: one each for a random subset
        plan = sorted(rng.choice(eligible, max(1, fit_budget // n_images), replace=False))
    emb = np.asarray(embeddings, dtype=np.float32)
    ratios, weights = [], []
    for c in plan:
        mine = emb[labels == c]
        pick = rng.permutation(len(mine))
        # with scale 1, the rule's threshold is the mean leave-one-out distance itself
        m, d = enrolled_distances(mine[pick[:n_images]], mine[pick[n_images:]], k, seed,
                                  target_accept, np.ones(1), scale=1.0)
        if not m >= SCALE_MIN_SPREAD:
            continue
        ratios.append(d / m)
        weights.append(np.full(len(d), 1.0 / len(d)))
    if not ratios:
        return None, 0, ("the simulated enrolments had no spread (the validation samples of "
                         "each source are identical)")
    r, w = np.concatenate(ratios), np.concatenate(weights) / len(ratios)
    order = np.argsort(r, kind="stable")
    reached = np.cumsum(w[order]) >= target_accept - 1e-12
    return (float(r[order][np.argmax(reached)] if reached.any() else r.max()), len(ratios),
            f"{len(eligible)} with enough of them")


def enrolled_distances(few: np.ndarray, rest: np.ndarray, k: int, seed: int,
                       target_accept: float, existing_thresholds: np.ndarray,
                       scale: float | None = None) -> tuple[float, np.ndarray]:
    """Enrol the image embeddings ``few`` by the enrolment rule alone (their own reference
    points and threshold, no other source in play) and measure ``rest`` against them: the
    threshold, and each of ``rest``'s distances to the nearest new point. Used to see what the
    rule gives a source whose other images are known (simulated enrolments)."""
    owner = np.arange(len(few))
    threshold, _ = enrolment_threshold(few, owner, few, k, seed, target_accept,
                                       existing_thresholds, scale)
    points = enrolment_references(few, owner, k, seed)
    return threshold, distances(rest, points).min(axis=1)


def sample_subset(labels: np.ndarray, per_source: int, seed: int,
                  prefer: np.ndarray | None = None) -> np.ndarray:
    """Indices of at most ``per_source`` items of each label (random, reproducible, sorted).
    With ``prefer`` (booleans), a label's preferred items are kept first (at random among them
    if there are more than ``per_source``), and the rest of its share is drawn from the others."""
    rng = np.random.default_rng(seed)
    first = np.zeros(len(labels), bool) if prefer is None else np.asarray(prefer, bool)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_source:
            keep.append(idx)
            continue
        top, other = idx[first[idx]], idx[~first[idx]]  # without preferred items: other = idx
        if len(top) >= per_source:
            keep.append(np.sort(rng.choice(top, per_source, replace=False)))
        else:
            keep.append(np.sort(np.r_[top, rng.choice(other, per_source - len(top),
                                                      replace=False)]))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def fit_separator(others: np.ndarray, new: np.ndarray, c: float = SEPARATOR_C) -> np.ndarray:
    """The separator of a new source: weights and bias (D + 1,) of a logistic regression of the
    new source's image embeddings against ``others`` (the other sources' sample embeddings),
    classes weighted to balance. ``w·x + b > 0`` claims ``x`` for the new source."""
    from sklearn.linear_model import LogisticRegression

    if len(new) == 0 or len(others) == 0:
        raise ValueError("a separator needs images of the new source and of the others")
    x = np.concatenate([others, new]).astype(np.float64)
    y = np.r_[np.zeros(len(others)), np.ones(len(new))]
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(x, y)
    out = np.append(clf.coef_[0], clf.intercept_[0]).astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError("the separator did not converge to finite weights")
    return out


def separator_margins(embeddings: np.ndarray, separators: np.ndarray) -> np.ndarray:
    """``w·x + b`` (N×C) of every source's separator (rows of ``separators``, C×(D + 1));
    −inf for sources without one (a row of NaN)."""
    sep = np.asarray(separators, dtype=np.float64)
    out = np.asarray(embeddings, dtype=np.float64) @ np.nan_to_num(sep[:, :-1]).T \
        + np.nan_to_num(sep[:, -1])[None, :]
    out[:, np.isnan(sep).any(axis=1)] = -np.inf
    return out


def decide_sources(dist: np.ndarray, thresholds: np.ndarray, enrolled: np.ndarray,
                   margins: np.ndarray | None = None) -> np.ndarray:
    """Each image's source index, or −1 for unknown, from its distance to every source (N×C),
    the sources' distance thresholds (C), which sources were enrolled (C booleans) and,
    optionally, the enrolled sources' separator margins (N×C, −inf where none).

    Sources are visited from the nearest. An enrolled source takes the image if the image is
    within its threshold and is skipped otherwise; the first *trained* source reached decides
    as if nothing had been enrolled (within its threshold, else unknown), and after it only an
    enrolled source that accepts can still take the image. Without enrolled sources this is
    the plain rule: the nearest source, if within its threshold.

    Then an image left ``unknown`` goes to an enrolled source whose separator claims it (margin
    > 0); among several, the one with the smallest distance relative to its threshold. So the
    separators never change an answer the distance rule gave: they only recover images that
    would have been ``unknown``.
    """
    out = _decide_by_distance(dist, thresholds, enrolled)
    if margins is None:
        return out
    claims = (np.asarray(margins) > 0) & np.asarray(enrolled, dtype=bool)[None, :]
    rows = np.flatnonzero(claims.any(axis=1) & (out < 0))
    if len(rows):  # a zero threshold (identical enrolment images) must not divide by zero
        thr = np.maximum(np.asarray(thresholds, dtype=np.float64), 1e-12)
        rel = np.asarray(dist, dtype=np.float64)[rows] / thr[None, :]
        out[rows] = np.where(claims[rows], rel, np.inf).argmin(axis=1)
    return out


def _decide_by_distance(dist: np.ndarray, thresholds: np.ndarray, enrolled: np.ndarray
                        ) -> np.ndarray:
    """The distance part of :func:`decide_sources`."""
    dist = np.asarray(dist, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    enrolled = np.asarray(enrolled, dtype=bool)
    nearest = dist.argmin(axis=1) if dist.shape[1] else np.zeros(len(dist), np.int64)
    if not enrolled.any():
        ok = dist[np.arange(len(dist)), nearest] <= thresholds[nearest]
        return np.where(ok, nearest, -1)
    accepts = dist <= thresholds[None, :]
    out = np.full(len(dist), -1, dtype=np.int64)
    for i, order in enumerate(np.argsort(dist, axis=1, kind="stable")):
        trained_decided = False
        for c in order:
            if enrolled[c]:
                if accepts[i, c]:
                    out[i] = c
                    break
            elif not trained_decided:
                if accepts[i, c]:
                    out[i] = c
                    break
                trained_decided = True
    return out
