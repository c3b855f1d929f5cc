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

NO_CONTENT_REASON = (f"one colour covers ≥ {UNIFORM_SHARE:.0%} of the image: it has no trace to "
                     "attribute")
"""The reason given for a uniform image (error code ``no_content``), wherever it is refused."""

_SAMPLE = 4096
"""Pixels drawn (seeded) to find the only colour that could cover 99% of an image."""

_STRIP = 1 << 16
"""Pixels compared at a time when counting that colour (bounded memory, early stop)."""


def is_uniform(image: np.ndarray) -> bool:
    """Whether one exact colour covers at least :data:`UNIFORM_SHARE` of ``image``'s pixels
    (an (H, W, 3) uint8 array).

    A colour on 99% of the pixels is the median of any large sample of them, so the median of
    4096 pixels drawn at seeded random positions (all the pixels of a smaller image) is the only
    candidate (drawing it wrongly is
    far less likely than 1e-100), and a sample with over 5% of other colours rules the image
    out; otherwise the candidate's pixels are counted exactly, in strips, stopping as soon as
    more than 1% differ. Time and memory are linear in the image and small."""
    flat = image.reshape(-1, image.shape[-1])
    n = len(flat)
    if n == 0:
        return False
    allowed = n - int(np.ceil(UNIFORM_SHARE * n))  # pixels of other colours that may remain
    if n <= _SAMPLE:  # small: every pixel is the sample, and the count is on it
        packed = _pack(flat)
        colour = np.partition(packed, n // 2)[n // 2]
        return int(np.count_nonzero(packed != colour)) <= allowed
    sample = _pack(flat[np.random.default_rng(0).integers(0, n, size=_SAMPLE)])
    colour = np.partition(sample, _SAMPLE // 2)[_SAMPLE // 2]
    if np.count_nonzero(sample != colour) > 0.05 * _SAMPLE:
        return False  # 99% one colour puts ~1% of a sample off it, never 5% (25 SD away)
    other = 0
    for start in range(0, n, _STRIP):
        other += int(np.count_nonzero(_pack(flat[start : start + _STRIP]) != colour))
        if other > allowed:
            return False
    return True


def _pack(pixels: np.ndarray) -> np.ndarray:
    """One int64 per pixel of three 8-bit channels."""
    p = pixels.astype(np.int64)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]
