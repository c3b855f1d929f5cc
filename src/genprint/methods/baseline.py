"""``baseline``: nearest centroid on a hand-crafted noise-residual spectrum.

The simple, honest reference that the published methods are compared against. No learning
beyond averaging:

1. each image is cut into non-overlapping ``patch_size`` tiles (never resized);
2. per tile and colour channel, a high-pass residual ``r = x − mean(4 neighbours)`` removes most
   scene content; its log power spectrum (``log |FFT(r)|²``) exposes periodic traces such as
   upsampling or demosaicing artefacts;
3. tile spectra are averaged per image, standardised with the training statistics and
   L2-normalised;
4. each known source is the normalised mean of its training features (a centroid); the score of an
   image for a source is the cosine similarity to its centroid;
5. per-source thresholds accept a target fraction (default 95%) of that source's **validation**
   images; an image below its nearest centroid's threshold is ``unknown``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genprint.io.crops import tiles
from genprint.methods.base import METHODS, Attributor, Prediction, check_training_labels
from genprint.methods.thresholds import score_threshold
from genprint.storage.model_dir import ModelContents


def residual_spectrum(patches: np.ndarray) -> np.ndarray:
    """Log power spectrum of the high-pass residual of (N, s, s, 3) uint8 patches, per channel.

    Returns (N, 3 · s · (s // 2 + 1)) float32 features.
    """
    x = patches.astype(np.float32) / 255.0
    neighbours = (
        np.roll(x, 1, axis=1) + np.roll(x, -1, axis=1) + np.roll(x, 1, axis=2)
        + np.roll(x, -1, axis=2)
    )
    residual = x - 0.25 * neighbours
    power = np.abs(np.fft.rfft2(residual, axes=(1, 2))) ** 2
    return np.log(power + 1e-10).reshape(len(patches), -1).astype(np.float32)


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


@METHODS.register("baseline")
class BaselineAttributor(Attributor):
    """Nearest-centroid attribution on noise-residual spectra (see module doc)."""

    method = "baseline"

    def __init__(self, patch_size: int = 32, max_tiles: int = 16,
                 target_accept: float = 0.95) -> None:
        self.patch_size = patch_size
        self.max_tiles = max_tiles
        self.target_accept = target_accept

    @property
    def min_size(self) -> int:
        return self.patch_size

    # ------------------------------------------------------------------ features
    def _tile_features(self, image: np.ndarray) -> np.ndarray:
        return residual_spectrum(tiles(image, self.patch_size, self.max_tiles))

    def _standardised(self, feats: np.ndarray) -> np.ndarray:
        return _normalise((feats - self.mean_) / self.std_)

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Per-image feature: tile spectra averaged (before standardisation)."""
        return np.stack([self._tile_features(img).mean(axis=0) for img in images])

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train_images: Sequence[np.ndarray],
        train_labels: Sequence[str],
        val_images: Sequence[np.ndarray],
        val_labels: Sequence[str],
    ) -> BaselineAttributor:
        """Learn centroids on training images and thresholds on validation images only."""
        classes = sorted(set(train_labels))
        if len(classes) < 1:
            raise ValueError("no training images")
        check_training_labels(classes, list(val_labels))
        feats = self.features(train_images)
        self.mean_ = feats.mean(axis=0)
        self.std_ = feats.std(axis=0) + 1e-6
        z = self._standardised(feats)
        labels = np.array(train_labels)
        self.centroids_ = _normalise(np.stack([z[labels == c].mean(axis=0) for c in classes]))
        self.classes_ = classes
        self.model_sha256_ = None  # refitted: no saved model holds it until saved
        known = [i for i, lab in enumerate(val_labels) if lab in classes]
        val_scores = self._scores(self.features([val_images[i] for i in known]))
        val_idx = np.array([classes.index(val_labels[i]) for i in known])
        self.thresholds_ = np.array([
            score_threshold(val_scores[val_idx == k, k], self.target_accept)
            for k in range(len(classes))
        ])
        return self

    def _scores(self, feats: np.ndarray) -> np.ndarray:
        return self._standardised(feats) @ self.centroids_.T

    # ------------------------------------------------------------------ inference
    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        out = []
        for img in images:
            tile_feats = self._tile_features(img)
            scores = self._scores(tile_feats.mean(axis=0, keepdims=True))[0]
            tile_votes = self._scores(tile_feats).argmax(axis=1)
            agreement = float(np.mean(tile_votes == scores.argmax()))
            out.append(Prediction(scores=scores, n_tiles=len(tile_feats),
                                  tile_agreement=agreement))
        return out

    # ------------------------------------------------------------------ persistence
    def _to_contents(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
        card = {
            "params": {"patch_size": self.patch_size, "max_tiles": self.max_tiles,
                       "target_accept": self.target_accept},
            "backbone": {
                "name": "residual-spectrum",
                "preprocessing": {
                    "input": "uint8 RGB, never resized",
                    "crop": f"non-overlapping {self.patch_size}x{self.patch_size} tiles, "
                            f"at most {self.max_tiles} per image (evenly spaced subset)",
                    "feature": "log power spectrum of the 4-neighbour high-pass residual, "
                               "per channel, averaged over tiles",
                },
            },
            "score": "cosine similarity to the source centroid (higher = closer)",
        }
        arrays = {"mean": self.mean_, "std": self.std_, "centroids": self.centroids_}
        return card, {}, arrays

    @classmethod
    def _from_contents(cls, contents: ModelContents) -> BaselineAttributor:
        params = contents.card.get("params", {})
        model = cls(**params)
        model.mean_ = contents.arrays["mean"]
        model.std_ = contents.arrays["std"]
        model.centroids_ = contents.arrays["centroids"]
        model.classes_ = list(contents.card["classes"])
        model.thresholds_ = np.asarray(contents.card["thresholds"], dtype=np.float64)
        model.training_info_ = dict(contents.card.get("training", {}))
        from genprint.storage.model_dir import ModelFormatError

        if model.centroids_.shape[0] != len(model.classes_):
            raise ModelFormatError("centroids and classes disagree in the card")
        if isinstance(model.patch_size, int) and model.patch_size > 0:
            probe = model._tile_features(np.zeros((model.patch_size,) * 2 + (3,), np.uint8))
            if probe.shape[-1] != model.mean_.shape[-1] or \
                    model.centroids_.shape[-1] != model.mean_.shape[-1]:
                raise ModelFormatError(f"the card's patch_size {model.patch_size} does not match "
                                       "the stored feature statistics")
        return model
