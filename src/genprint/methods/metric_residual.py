"""Training-free residual statistics joined to the ``metric`` embedding (``residual_weight``).

The learned embedding is shaped by the loss to tell the *training* sources apart, so it can
squeeze out what would tell an unseen source apart. These 60 numbers per tile are computed, not
learned, from the tile's high-pass residual (the pixel minus the mean of its four neighbours,
per channel), in the tradition of hand-made forensic features:

* the log standard deviation of the residual per channel (3): noise level;
* its normalised autocorrelation at lags (0,1), (1,0), (1,1), (1,−1), (0,2), (2,0) per channel
  (18): how the noise is shaped by interpolation and filtering;
* the correlation of the residual between channels (3): demosaicing and colour processing;
* per channel, the log residual energy of the four pixel phases of the 2×2 grid relative to
  their mean, sorted (12): the periodic trace of a colour filter array (Popescu & Farid 2005)
  or of 2× upsampling, whatever its phase;
* the log share of the residual's power in 6 radial × 4 angular frequency bands (24).

They are standardised with the training tiles' mean and standard deviation (kept in the model),
scaled so their expected squared norm is ``weight²``, joined to the unit embedding and the
whole vector re-normalised: reference points, thresholds, enrolment and the stored samples all
live in the joined space. With weight 0 (or the feature off) the embedding is unchanged.
"""

from __future__ import annotations

import numpy as np

N_FEATURES = 60
"""Length of :func:`residual_statistics`' vector per tile."""

LAGS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))
RADIAL_BANDS = 6
ANGULAR_BANDS = 4


def _bands(h: int, w: int) -> np.ndarray:
    """Band index (0 … RADIAL_BANDS·ANGULAR_BANDS − 1) of every frequency of an h×w spectrum."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fy**2 + fx**2) / np.sqrt(0.5)
    angle = np.abs(np.arctan2(fy, fx)) % np.pi
    r = np.minimum((radius * RADIAL_BANDS).astype(int), RADIAL_BANDS - 1)
    a = np.minimum((angle / np.pi * ANGULAR_BANDS).astype(int), ANGULAR_BANDS - 1)
    return r * ANGULAR_BANDS + a


def residual_statistics(tiles: np.ndarray) -> np.ndarray:
    """The statistics of a batch of RGB tiles (N×H×W×3 uint8, H, W ≥ 8 and even) → N×60 float64.

    Every number is computed per tile; nothing is resized."""
    if tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(f"residual statistics need N×H×W×3 tiles, got shape {tiles.shape}")
    n, height, width, _ = tiles.shape
    if height < 8 or width < 8:
        raise ValueError(f"residual statistics need tiles of at least 8×8, got {height}×{width}")
    if n == 0:
        return np.zeros((0, N_FEATURES))
    x = tiles.astype(np.float64) / 255.0
    r = x[:, 1:-1, 1:-1] - 0.25 * (x[:, :-2, 1:-1] + x[:, 2:, 1:-1]
                                   + x[:, 1:-1, :-2] + x[:, 1:-1, 2:])
    h, w = r.shape[1:3]
    sd = r.std(axis=(1, 2)) + 1e-6  # N×3
    z = (r - r.mean(axis=(1, 2), keepdims=True)) / sd[:, None, None, :]
    parts = [np.log(sd)]
    for dy, dx in LAGS:
        a = z[:, dy:, max(dx, 0): w + min(dx, 0)]
        b = z[:, : h - dy, max(-dx, 0): w - max(dx, 0)]
        parts.append((a * b).mean(axis=(1, 2)))
    parts.append(np.stack([(z[..., 0] * z[..., 1]).mean(axis=(1, 2)),
                           (z[..., 1] * z[..., 2]).mean(axis=(1, 2)),
                           (z[..., 0] * z[..., 2]).mean(axis=(1, 2))], axis=1))
    phases = np.stack([(r[:, i::2, j::2] ** 2).mean(axis=(1, 2)) for i in (0, 1) for j in (0, 1)],
                      axis=2)  # N×3×4
    phases = np.sort(np.log(phases / phases.mean(axis=2, keepdims=True) + 1e-9), axis=2)
    parts.append(phases.reshape(n, 12))
    power = (np.abs(np.fft.fft2(r, axes=(1, 2))) ** 2).mean(axis=3).reshape(n, -1)
    band = _bands(h, w).ravel()
    n_bands = RADIAL_BANDS * ANGULAR_BANDS
    per_band = np.zeros((n, n_bands))
    for b in range(n_bands):
        mask = band == b
        if mask.any():
            per_band[:, b] = power[:, mask].sum(axis=1)
    total = power.sum(axis=1, keepdims=True) + 1e-12
    present = np.bincount(band, minlength=n_bands) > 0
    parts.append(np.where(present, np.log(per_band / total + 1e-9), 0.0))
    return np.concatenate(parts, axis=1)


def standardiser(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (floored) of training tiles' statistics."""
    if len(stats) < 2:
        raise ValueError("standardising residual statistics needs at least 2 training tiles")
    return stats.mean(axis=0), np.maximum(stats.std(axis=0), 1e-6)


def join(embeddings: np.ndarray, stats: np.ndarray, mean: np.ndarray, std: np.ndarray,
         weight: float) -> np.ndarray:
    """Unit embeddings (N×D) joined to the standardised statistics × weight, re-normalised."""
    scaled = weight * (stats - mean) / std / np.sqrt(stats.shape[1])
    joined = np.concatenate([embeddings, scaled.astype(embeddings.dtype)], axis=1)
    return joined / np.maximum(np.linalg.norm(joined, axis=1, keepdims=True), 1e-12)
