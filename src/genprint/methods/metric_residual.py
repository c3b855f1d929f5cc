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

import functools

import numpy as np
import torch

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


@functools.lru_cache(maxsize=16)
def _band_matrix(h: int, w: int) -> torch.Tensor:
    """(h·(w//2+1)) × bands matrix summing an ``rfft2`` power map into the full spectrum's bands.

    The power spectrum of a real signal is symmetric, P(−f) = P(f): an ``rfft2`` entry stands
    for itself and, outside the first column and (w even) the Nyquist column, whose mirrors are
    ``rfft2`` entries of their own, for its mirror too, which may lie in another band."""
    half = w // 2 + 1
    full = _bands(h, w)
    matrix = np.zeros((h, half, RADIAL_BANDS * ANGULAR_BANDS))
    for i in range(h):
        for j in range(half):
            matrix[i, j, full[i, j]] += 1.0
            if j != 0 and not (w % 2 == 0 and j == w // 2):
                matrix[i, j, full[-i % h, -j % w]] += 1.0
    return torch.from_numpy(matrix.reshape(h * half, -1))


def residual_statistics(tiles: np.ndarray) -> np.ndarray:
    """The statistics of a batch of RGB tiles (N×H×W×3 uint8, H, W ≥ 8) → N×60 float64.

    Every number is computed per tile (in float64, with torch's kernels); nothing is resized."""
    if tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(f"residual statistics need N×H×W×3 tiles, got shape {tiles.shape}")
    n, height, width, _ = tiles.shape
    if height < 8 or width < 8:
        raise ValueError(f"residual statistics need tiles of at least 8×8, got {height}×{width}")
    if n == 0:
        return np.zeros((0, N_FEATURES))
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(torch.float64).div_(255.0)
        x = x.permute(0, 3, 1, 2)  # N×3×H×W
        r = x[:, :, 1:-1, 1:-1] - 0.25 * (x[:, :, :-2, 1:-1] + x[:, :, 2:, 1:-1]
                                          + x[:, :, 1:-1, :-2] + x[:, :, 1:-1, 2:])
        h, w = r.shape[2:]
        sd = r.std(dim=(2, 3), correction=0) + 1e-6  # N×3
        z = (r - r.mean(dim=(2, 3), keepdim=True)) / sd[:, :, None, None]
        parts = [sd.log()]
        for dy, dx in LAGS:
            a = z[:, :, dy:, max(dx, 0): w + min(dx, 0)]
            b = z[:, :, : h - dy, max(-dx, 0): w - max(dx, 0)]
            parts.append((a * b).mean(dim=(2, 3)))
        parts.append(torch.stack([(z[:, 0] * z[:, 1]).mean(dim=(1, 2)),
                                  (z[:, 1] * z[:, 2]).mean(dim=(1, 2)),
                                  (z[:, 0] * z[:, 2]).mean(dim=(1, 2))], dim=1))
        phases = torch.stack([(r[:, :, i::2, j::2] ** 2).mean(dim=(2, 3))
                              for i in (0, 1) for j in (0, 1)], dim=2)  # N×3×4
        phases = torch.log(phases / phases.mean(dim=2, keepdim=True) + 1e-9).sort(dim=2).values
        parts.append(phases.reshape(n, 12))
        # half of the symmetric spectrum (rfft2) gives the full spectrum's band sums
        spectrum = torch.fft.rfft2(r)
        power = (spectrum.real**2 + spectrum.imag**2).mean(dim=1).reshape(n, -1)
        per_band = power @ _band_matrix(h, w)
        total = per_band.sum(dim=1, keepdim=True) + 1e-12
        present = torch.from_numpy(np.bincount(_bands(h, w).ravel(),
                                               minlength=per_band.shape[1]) > 0)
        parts.append(torch.where(present, torch.log(per_band / total + 1e-9),
                                 torch.zeros((), dtype=torch.float64)))
        return torch.cat(parts, dim=1).numpy()


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
