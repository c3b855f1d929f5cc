"""What a member's recovered noise looks like: a one-class Gaussian model, fitted on members only.

Stage ``noise`` maps an image back to the starting noise of a diffusion generator (its
deterministic DDIM inversion) and asks whether that noise looks like the one a member started
from. A member's recovered noise is *not* exactly white — the inversion is approximate — but it
is consistently so; a photograph or another generator's image leaves a different spectrum. So
rather than measure the distance to ideal white noise (1 − spectral flatness,
:func:`~genprint.verify.inversion.noise_whiteness_score`), the score is how far the noise's
features lie from those of the generator's own samples:

* **features** (:func:`noise_features`), per channel of the C×H×W noise: the log power in 8
  radial frequency bands, normalised by the channel's mean power (the spectrum's shape); the log
  variance; and the correlation of every pair of channels — 8·C + C + C(C−1)/2 numbers
  (30 for RGB-shaped noise);
* **model** (:class:`NoiseModel`): mean and Ledoit–Wolf shrunk covariance of those features over
  ``n`` of the generator's own samples; the score of an image is the squared Mahalanobis
  distance of its features from that mean (≈ χ² with 30 degrees of freedom for a member).

The model is fitted on samples *disjoint* from the calibration samples (another seed), so the
calibration's scores are those of unseen members and the conformal p-values keep their meaning.
Chosen on validation images only (``benchmarks/invert_noise_whiteness.py``; 300 members, 150
real, 15 of each other generator): AUC 0.961 / 0.986 for ddim-pixel-s0 / -s1, against 0.939 /
0.929 for 1 − flatness on the same images.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

RADIAL_BANDS = 8
FEATURES = "radial-log-power-8+log-variance+channel-correlation"


def noise_model_seed(name: str, calibration_seed: int) -> int:
    """Seed of the samples a generator's noise model is fitted on: derived from the calibration
    seed, so the two sample sets differ."""
    return zlib.crc32(f"genprint-noise-model:{name}:{calibration_seed}".encode()) & 0x7FFFFFFF


def expected_feature_count(latent_shape: tuple[int, ...]) -> int | None:
    """Number of features of latents of this shape (C×H×W), or None without spatial axes."""
    if len(latent_shape) != 3:
        return None
    c = int(latent_shape[0])
    return RADIAL_BANDS * c + c + c * (c - 1) // 2


def noise_features(z: torch.Tensor) -> np.ndarray:
    """The features of the module doc for latents ``z`` (N×C×H×W) → float64 N×F."""
    if z.dim() != 4 or min(z.shape[-2:]) < 2:
        raise ValueError("noise features need latents with spatial axes (N×C×H×W); "
                         f"got shape {tuple(z.shape)}")
    z = z.double()
    n, c, h, w = z.shape
    power = torch.fft.fft2(z).abs() ** 2
    power = power / power.mean((2, 3), keepdim=True).clamp_min(1e-30)
    fy, fx = torch.fft.fftfreq(h).double()[:, None], torch.fft.fftfreq(w).double()[None, :]
    radius = torch.sqrt(fy ** 2 + fx ** 2)
    band = torch.clamp((radius / radius.max() * RADIAL_BANDS).long(), max=RADIAL_BANDS - 1)
    radial = torch.stack([torch.log(power[:, :, band == b].mean(2).clamp_min(1e-30))
                          for b in range(RADIAL_BANDS)], 2).reshape(n, -1)
    log_var = torch.log((z ** 2).mean((2, 3)).clamp_min(1e-30))
    unit = z.reshape(n, c, -1)
    unit = unit / unit.norm(dim=2, keepdim=True).clamp_min(1e-30)
    pairs = [(i, j) for i in range(c) for j in range(i + 1, c)]
    corr = (torch.stack([(unit[:, i] * unit[:, j]).sum(1) for i, j in pairs], 1) if pairs
            else torch.zeros((n, 0), dtype=torch.float64))
    return torch.cat([radial, log_var, corr], 1).numpy()


@dataclass
class NoiseModel:
    """Mean and precision of the members' noise features (see module doc)."""

    mean: np.ndarray
    precision: np.ndarray
    n: int
    seed: int
    features: str = FEATURES

    @classmethod
    def fit(cls, latents: torch.Tensor, seed: int) -> NoiseModel:
        """Fit on the recovered noise of ``n ≥ 2`` of the generator's own samples."""
        from sklearn.covariance import LedoitWolf

        x = noise_features(latents)
        if len(x) < 2:
            raise ValueError("a noise model needs at least 2 samples")
        lw = LedoitWolf().fit(x)
        return cls(mean=lw.location_, precision=lw.precision_, n=len(x), seed=int(seed))

    def distance(self, latents: torch.Tensor) -> np.ndarray:
        """Squared Mahalanobis distance of each latent's features from the members' mean."""
        f = noise_features(latents)
        if f.shape[1] != len(self.mean):
            raise ValueError(f"the noise model has {len(self.mean)} features, these latents "
                             f"give {f.shape[1]} (another latent shape?)")
        d = f - self.mean
        return np.einsum("ij,jk,ik->i", d, self.precision, d)

    def to_json(self) -> dict[str, Any]:
        return {"features": self.features, "n": self.n, "seed": self.seed,
                "mean": [float(v) for v in self.mean],
                "precision": [[float(v) for v in row] for row in self.precision]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NoiseModel:
        """Rebuild and check (``ValueError`` / ``TypeError`` on a malformed or unknown model)."""
        if not isinstance(d, dict):
            raise TypeError("noise model: not a JSON object")
        if d.get("features") != FEATURES:
            raise ValueError(f"unknown noise features {d.get('features')!r}")
        mean = np.asarray(d["mean"], dtype=np.float64)
        precision = np.asarray(d["precision"], dtype=np.float64)
        if mean.ndim != 1 or precision.shape != (len(mean), len(mean)) or not (
                np.isfinite(mean).all() and np.isfinite(precision).all()):
            raise ValueError("noise model: mean and precision do not match or are not finite")
        if not np.allclose(precision, precision.T,
                           atol=1e-8 * max(1.0, float(np.abs(precision).max()))):
            raise ValueError("noise model: the precision matrix is not symmetric")
        if len(mean) == 0 or np.linalg.eigvalsh(precision).min() <= 0:
            raise ValueError("noise model: the precision matrix is not positive definite")
        return cls(mean=mean, precision=precision, n=int(d["n"]), seed=int(d["seed"]))
