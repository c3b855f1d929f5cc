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
* **threshold**, by the same acceptance rule applied to held-out data:
  - ≥ 3 images: leave-one-image-out — each image's embedding against the reference points built
    from the other images; threshold = :func:`acceptance_threshold` of these distances (with
    fewer than 19 images: the largest);
  - 1–2 images with ≥ 3 tiles in all: leave-one-tile-out — each tile against the reference points
    built from the other tiles (tile embeddings are noisier than image embeddings, so this errs
    towards accepting);
  - fewer than 3 tiles: the median of the existing sources' thresholds.

The rule was chosen on validation data only (``benchmarks/metric_validation.py``: known sources
held out in turn and enrolled from 10 images): one point per image gave a higher recall of the
enrolled source than a single averaged point, for a small loss on the other sources; the
finite-sample quantile (the largest of 10 held-out distances rather than the interpolated 95%
quantile) raised the mean enrolment recall by ≈ 0.03 at no cost to the other sources.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def normalise(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    v = np.asarray(v, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def distances(embeddings: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Euclidean distances (N×R) between unit embeddings and unit reference points."""
    cos = np.clip(embeddings @ references.T, -1.0, 1.0)
    return np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0))


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
    """The threshold that accepts a share ``target_accept`` of new images like ``held_out``.

    The finite-sample (split-conformal) quantile: the ⌈(n + 1)·target⌉-th smallest of the n
    held-out distances, so that a new image exchangeable with them is accepted with probability
    at least ``target_accept``. When that rank exceeds n (fewer than 19 values for 95%), no
    order statistic guarantees the target and the largest value is used: its expected acceptance
    is n / (n + 1). With 200 validation images it differs from the plain 95% quantile by about one
    rank; with 10 enrolment images, the plain quantile would accept only ≈ 0.87 in expectation
    and the largest value accepts 10/11 ≈ 0.91.
    """
    d = np.sort(np.asarray(held_out, dtype=np.float64).ravel())
    if len(d) == 0:
        raise ValueError("no held-out distances to set a threshold from")
    if not 0.0 < target_accept <= 1.0:
        raise ValueError(f"target_accept must be in (0, 1], got {target_accept}")
    rank = math.ceil((len(d) + 1) * target_accept - 1e-9)
    return float(d[min(rank, len(d)) - 1])


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


def enrolment_threshold(tile_embeddings: np.ndarray, tile_owner: np.ndarray,
                        image_embeddings: np.ndarray, k: int, seed: int, target_accept: float,
                        existing_thresholds: np.ndarray) -> tuple[float, str]:
    """Distance threshold of a new source and the rule that set it (see module doc)."""
    n_images = len(image_embeddings)
    if n_images >= 3:
        held = []
        for i in range(n_images):
            rest = tile_owner != i
            refs = enrolment_references(tile_embeddings[rest], tile_owner[rest], k, seed)
            held.append(distances(image_embeddings[i : i + 1], refs).min())
        return acceptance_threshold(np.array(held), target_accept), "leave-one-image-out"
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


def decide_sources(dist: np.ndarray, thresholds: np.ndarray, enrolled: np.ndarray) -> np.ndarray:
    """Each image's source index, or −1 for unknown, from its distance to every source (N×C),
    the sources' distance thresholds (C) and which sources were enrolled (C booleans).

    Sources are visited from the nearest. An enrolled source takes the image if the image is
    within its threshold and is skipped otherwise; the first *trained* source reached decides
    as if nothing had been enrolled (within its threshold, else unknown), and after it only an
    enrolled source that accepts can still take the image. Without enrolled sources this is
    the plain rule: the nearest source, if within its threshold.
    """
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
