"""Images with nothing to attribute: one exact colour over (nearly) all of the pixels.

A solid-colour image carries no generator or camera trace: every method would still rank some
source first, and an inverted generator reconstructs it almost perfectly. genprint refuses such
an image per file with the error code ``no_content`` rather than give it a source.
"""

from __future__ import annotations

import numpy as np

UNIFORM_SHARE = 0.99
"""An image whose most common colour covers at least this share of its pixels is uniform (a
solid colour, give or take a few pixels)."""

_EXACT_BELOW = 1 << 20
"""Images with fewer pixels are counted exactly; larger ones are first screened on a sample."""


def is_uniform(image: np.ndarray) -> bool:
    """Whether one exact colour covers at least :data:`UNIFORM_SHARE` of ``image``'s pixels
    (an (H, W, 3) uint8 array). Large images are screened on 64 evenly spread pixels first: if
    no colour holds 48 of them, the image is not uniform; otherwise the pixels of the commonest
    sampled colour are counted exactly."""
    flat = image.reshape(-1, image.shape[-1])
    n = len(flat)
    if n == 0:
        return False
    if n < _EXACT_BELOW:
        return bool(np.unique(_pack(flat), return_counts=True)[1].max() >= UNIFORM_SHARE * n)
    where = np.linspace(0, n - 1, 64).astype(np.int64)
    sample = _pack(flat[where])
    colours, counts = np.unique(sample, return_counts=True)
    if counts.max() < 48:  # 17 or more of 64 spread pixels differ: far from 99% one colour
        return False
    colour = flat[where[np.argmax(sample == colours[np.argmax(counts)])]]
    return bool(np.count_nonzero((flat == colour).all(axis=1)) >= UNIFORM_SHARE * n)


def _pack(pixels: np.ndarray) -> np.ndarray:
    """One int64 per pixel of three 8-bit channels."""
    p = pixels.astype(np.int64)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]
