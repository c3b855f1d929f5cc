"""Image complexity as 2-D entropy, used by RONAN to calibrate reconstruction losses.

Simple images (flat, smooth) are easy for *any* generator to reconstruct, busy ones are hard
even for their own generator. RONAN divides the reconstruction loss by the image's complexity,
measured as its two-dimensional entropy: the Shannon entropy (bits) of the joint histogram of
(grey level of a pixel, mean grey level of its 3×3 neighbourhood), which, unlike the plain grey
histogram, sees spatial structure.
"""

from __future__ import annotations

import numpy as np


def _grey(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:  # C×H×W
        img = np.moveaxis(img, 0, -1)
    img = img.astype(np.float64)
    if img.max(initial=0.0) <= 1.0 and np.asarray(image).dtype != np.uint8:
        img = img * 255.0
    if img.ndim == 3:
        img = img @ np.array([0.299, 0.587, 0.114])
    return img


def entropy_2d(image: np.ndarray, levels: int = 256) -> float:
    """2-D entropy in bits of an H×W×3 (or H×W, or 3×H×W float in [0, 1]) image.

    Pairs (grey level, 3×3 neighbourhood mean excluding the pixel, edge-replicated), each
    quantised to ``levels`` levels. Ranges from 0 (a constant image) to log2(H·W).
    """
    g = _grey(image)
    h, w = g.shape
    p = np.pad(g, 1, mode="edge")
    neigh = sum(p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx) / 8.0
    scale = levels / 256.0
    a = np.clip(np.floor(g * scale), 0, levels - 1).astype(np.int64)
    b = np.clip(np.floor(neigh * scale), 0, levels - 1).astype(np.int64)
    counts = np.bincount((a * levels + b).ravel(), minlength=levels * levels)
    prob = counts[counts > 0] / counts.sum()
    return float(-(prob * np.log2(prob)).sum())


def complexities(images: np.ndarray | list[np.ndarray], levels: int = 256) -> np.ndarray:
    """:func:`entropy_2d` of every image (uint8 N×H×W×3 or a list)."""
    return np.array([entropy_2d(img, levels) for img in images], dtype=np.float64)


def log_detail(images: np.ndarray) -> np.ndarray:
    """Log of each image's detail energy: the mean squared discrete Laplacian (4-neighbour) of
    its pixels in [0, 1], over the interior and the colour channels, floored at 1e-12.

    Used by the detail adjustment of calibration (:mod:`genprint.verify.calibration`): what a
    generator cannot reproduce of a re-encoded image (JPEG's error) grows with its detail.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 3:
        raise ValueError(f"expected N×H×W×3 images of at least 3×3, got {x.shape}")
    x = x / 255.0
    lap = (4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2]
           - x[:, 1:-1, 2:])
    return np.log(np.maximum((lap ** 2).mean(axis=(1, 2, 3)), 1e-12))
