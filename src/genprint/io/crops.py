"""Fixed-size views of an image for methods that need one: crops and tiles, never resizing.

A method that works on ``size × size`` patches gets them from here:

* :func:`center_crop` — one central patch (validation, quick looks);
* :func:`random_crop` — a seeded random patch (training augmentation);
* :func:`tiles` — non-overlapping patches covering the image on a regular grid (inference), with a
  cap on their number: when an image holds more tiles than the cap, an evenly spaced subset of the
  grid is used, always the same for the same image size.

Offsets can be aligned to a multiple (``align``, e.g. 8 for JPEG blocks or 2 for the colour
filter array) so that patches keep the image's periodic traces in phase.
"""

from __future__ import annotations

import numpy as np

from genprint.io.images import ImageError


def _check(image: np.ndarray, size: int) -> tuple[int, int]:
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ImageError(
            "too_small",
            f"image is {w}×{h}, smaller than the required {size}×{size} crop "
            "(images are never upsampled)",
        )
    return h, w


def center_crop(image: np.ndarray, size: int, align: int = 1) -> np.ndarray:
    """The central ``size × size`` patch (offsets rounded down to a multiple of ``align``)."""
    h, w = _check(image, size)
    top = ((h - size) // 2) // align * align
    left = ((w - size) // 2) // align * align
    return image[top : top + size, left : left + size]


def random_crop(
    image: np.ndarray, size: int, rng: np.random.Generator, align: int = 1
) -> np.ndarray:
    """A random ``size × size`` patch drawn with ``rng`` (offsets multiples of ``align``)."""
    h, w = _check(image, size)
    top = int(rng.integers(0, (h - size) // align + 1)) * align
    left = int(rng.integers(0, (w - size) // align + 1)) * align
    return image[top : top + size, left : left + size]


def tile_positions(height: int, width: int, size: int, max_tiles: int | None = None) -> list[
    tuple[int, int]
]:
    """Top-left corners of non-overlapping ``size`` tiles on a grid centred in the image.

    With ``max_tiles`` set and more tiles available, an evenly spaced subset (row-major order) is
    returned. Deterministic for a given image size.
    """
    if height < size or width < size:
        raise ImageError(
            "too_small",
            f"image is {width}×{height}, smaller than the required {size}×{size} tile "
            "(images are never upsampled)",
        )
    rows, cols = height // size, width // size
    top0, left0 = (height - rows * size) // 2, (width - cols * size) // 2
    positions = [(top0 + r * size, left0 + c * size) for r in range(rows) for c in range(cols)]
    if max_tiles is not None:
        if max_tiles < 1:
            raise ValueError(f"max_tiles must be ≥ 1, got {max_tiles}")
        if len(positions) > max_tiles:
            pick = np.linspace(0, len(positions) - 1, max_tiles).round().astype(int)
            positions = [positions[i] for i in pick]
    return positions


def tiles(image: np.ndarray, size: int, max_tiles: int | None = 64) -> np.ndarray:
    """Non-overlapping ``size × size`` tiles of ``image`` as an (N, size, size, C) array."""
    h, w = _check(image, size)
    positions = tile_positions(h, w, size, max_tiles)
    return np.stack([image[t : t + size, l : l + size] for t, l in positions])
