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
clipped to ±:data:`CLIP` standard deviations, scaled so their expected squared norm is
``weight²``, joined to the unit embedding and the whole vector re-normalised: reference points,
thresholds, enrolment and the stored samples all live in the joined space. With weight 0 the
embedding is unchanged. A *flat* tile — one whose residual is (almost) zero in every channel:
a constant colour, a saturated area, a linear ramp — has no trace to measure; its standardised
statistics are set to 0 (the training tiles' mean), so the embedding alone places it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

N_FEATURES = 60
"""Length of :func:`residual_statistics`' vector per tile."""

CLIP = 12.0
"""Standardised statistics are clipped to ±CLIP standard deviations, so that one odd tile cannot
outweigh the rest of an image (on the built-in bench, no image of any source exceeds 11.6)."""

FLAT_SD = 1e-4
"""A tile whose residual standard deviation is below this in every channel (a fortieth of a
grey level; the built-in bench's smallest is 0.0015) is flat."""

PHASE_FLOOR = 1e-14
"""Added to the phases' residual energies, so that a flat channel gives equal phases, not 0/0."""

CHUNK_PIXELS = 16 * 32 * 32
"""Tiles per computation chunk = CHUNK_PIXELS // (tile pixels), at least 1 (16 tiles of 32×32):
bounded memory (≈ 2 MB of work arrays per chunk), the fastest size measured (≈ 6500 tiles/s on
one core against ≈ 2900 for 2048 tiles at once), and every chunk has the same size (the last one
padded), so a tile's statistics do not depend on what else is in the call, bit for bit."""

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
def _band_matrix(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h·(w//2+1)) × bands matrix summing an ``rfft2`` power map into the full spectrum's bands,
    and which bands hold a frequency at all at this size (cached: every chunk needs them).

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
    present = np.bincount(full.ravel(), minlength=RADIAL_BANDS * ANGULAR_BANDS) > 0
    return torch.from_numpy(matrix.reshape(h * half, -1)), torch.from_numpy(present)


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
        phases = phases + PHASE_FLOOR
        phases = torch.log(phases / phases.mean(dim=2, keepdim=True) + 1e-9).sort(dim=2).values
        parts.append(phases.reshape(n, 12))
        # half of the symmetric spectrum (rfft2) gives the full spectrum's band sums
        spectrum = torch.fft.rfft2(r)
        power = (spectrum.real**2 + spectrum.imag**2).mean(dim=1).reshape(n, -1)
        matrix, present = _band_matrix(h, w)
        per_band = power @ matrix
        total = per_band.sum(dim=1, keepdim=True) + 1e-12
        parts.append(torch.where(present, torch.log(per_band / total + 1e-9),
                                 torch.zeros((), dtype=torch.float64)))
        return torch.cat(parts, dim=1).numpy()


def statistics_in_chunks(tiles: np.ndarray) -> np.ndarray:
    """:func:`residual_statistics` of any number of same-size tiles, in fixed-size chunks
    (:data:`CHUNK_PIXELS`; the last chunk padded with blank tiles)."""
    if tiles.ndim != 4:
        return residual_statistics(tiles)  # its error
    n, height, width = tiles.shape[:3]
    size = max(1, CHUNK_PIXELS // max(1, height * width))
    out = np.zeros((n, N_FEATURES))
    for start in range(0, n, size):
        chunk = tiles[start : start + size]
        k = len(chunk)
        if k < size:  # pad: every chunk has the same size
            chunk = np.concatenate([chunk, np.zeros((size - k, *chunk.shape[1:]), chunk.dtype)])
        out[start : start + k] = residual_statistics(chunk)[:k]
    return out


def flat(stats: np.ndarray) -> np.ndarray:
    """Which tiles are flat (residual standard deviation below :data:`FLAT_SD` everywhere)."""
    return np.all(np.exp(stats[:, :3]) - 1e-6 < FLAT_SD, axis=1)


def standardiser(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (floored) of training tiles' statistics."""
    if len(stats) < 2:
        raise ValueError("standardising residual statistics needs at least 2 training tiles")
    return stats.mean(axis=0), np.maximum(stats.std(axis=0), 1e-6)


def join(embeddings: np.ndarray, stats: np.ndarray, mean: np.ndarray, std: np.ndarray,
         weight: float) -> np.ndarray:
    """Unit embeddings (N×D) joined to the standardised statistics (clipped to ±:data:`CLIP`,
    0 for flat tiles) × weight, re-normalised."""
    z = np.clip((stats - mean) / std, -CLIP, CLIP)
    z[flat(stats)] = 0.0
    scaled = weight * z / np.sqrt(stats.shape[1])
    joined = np.concatenate([embeddings, scaled.astype(embeddings.dtype)], axis=1)
    return joined / np.maximum(np.linalg.norm(joined, axis=1, keepdims=True), 1e-12)
