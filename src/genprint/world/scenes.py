"""Scenes: what the simulated cameras photograph.

Two kinds, half and half:

* **Photographs** that ship inside installed packages (scikit-image ``data``, scikit-learn's
  sample images, matplotlib's ``grace_hopper.jpg``). Each photograph is area-downsampled by
  4× or 6× (block means) before use, which erases the traces of the camera that took it, then
  converted to linear light. A scene is a random crop of one of them, randomly flipped/rotated.
* **Dead leaves**: occluding discs with a power-law radius distribution (density ∝ r⁻³), the
  standard natural-image model used in camera testing, with a soft shading gradient per disc.

Scenes are linear-light RGB float32 in [0, 1], N×H×W×3, deterministic for a seed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

PHOTO_FACTORS = (4, 6)
"""Area-downsampling factors applied to every bundled photograph (≥ 4, as the design asks)."""


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _area_downsample(img: np.ndarray, factor: int) -> np.ndarray:
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    img = img[:h, :w]
    return img.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))


def _bundled_photographs() -> list[np.ndarray]:
    """The offline photographs as uint8 H×W×3 (grey ones replicated to three channels)."""
    photos: list[np.ndarray] = []
    try:
        from skimage import data as skdata

        for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                     "immunohistochemistry", "retina", "camera", "coins", "brick", "grass",
                     "gravel", "moon"):
            photos.append(np.asarray(getattr(skdata, name)()))
    except ImportError:  # pragma: no cover - world extra missing
        pass
    try:
        from sklearn.datasets import load_sample_images

        photos.extend(np.asarray(i) for i in load_sample_images().images)
    except (ImportError, OSError):  # pragma: no cover - sklearn's sample data missing
        pass
    try:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as fh:
            photos.append(np.asarray(Image.open(fh).convert("RGB")))
    except (ImportError, OSError):  # pragma: no cover - matplotlib missing
        pass
    out = []
    for p in photos:
        if p.ndim == 2:
            p = np.repeat(p[..., None], 3, axis=2)
        out.append(p[..., :3])
    return out


@lru_cache(maxsize=1)
def photo_pool() -> tuple[np.ndarray, ...]:
    """Every bundled photograph at every factor of :data:`PHOTO_FACTORS`, linear light, float32."""
    pool = []
    for photo in _bundled_photographs():
        lin = _srgb_to_linear(photo.astype(np.float64) / 255.0)
        for f in PHOTO_FACTORS:
            pool.append(_area_downsample(lin, f).astype(np.float32))
    if not pool:
        raise RuntimeError("no bundled photographs found: install genprint[world]")
    return tuple(pool)


def photo_scene(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of a downsampled photograph (``size``×``size``×3, linear light)."""
    pool = [p for p in photo_pool() if min(p.shape[:2]) >= size]
    if not pool:
        return dead_leaves(size, rng)
    p = pool[int(rng.integers(len(pool)))]
    y = int(rng.integers(p.shape[0] - size + 1))
    x = int(rng.integers(p.shape[1] - size + 1))
    crop = p[y : y + size, x : x + size]
    crop = np.rot90(crop, int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = float(np.exp(rng.normal(0.0, 0.3)))  # exposure variation
    return np.clip(crop * gain, 0.0, 1.0).astype(np.float32)


def dead_leaves(size: int, rng: np.random.Generator, max_discs: int = 400) -> np.ndarray:
    """A dead-leaves scene: discs dropped front to back; each pixel shows the first disc over it."""
    r_min, r_max = 1.5, size * 0.8
    # Inverse-CDF sampling of p(r) ∝ r^-3 on [r_min, r_max].
    u = rng.random(max_discs)
    a, b = r_min**-2, r_max**-2
    radii = ((a - u * (a - b)) ** -0.5).astype(np.float32)
    centres = rng.uniform(-0.1 * size, 1.1 * size, size=(max_discs, 2)).astype(np.float32)
    base = rng.random((max_discs, 1))
    tint = rng.random((max_discs, 3))
    mix = rng.uniform(0.1, 0.6, size=(max_discs, 1))  # natural colours are mostly unsaturated
    colours = _srgb_to_linear((1 - mix) * base + mix * tint).astype(np.float32)
    grads = rng.normal(0.0, 0.15, size=(max_discs, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy = yy[None] - centres[:, 0, None, None]
    dx = xx[None] - centres[:, 1, None, None]
    inside = dy**2 + dx**2 <= radii[:, None, None] ** 2
    first = np.argmax(inside, axis=0)  # front-most disc per pixel
    first[~inside.any(axis=0)] = max_discs - 1
    rows, cols = np.arange(size)[:, None], np.arange(size)[None, :]
    shade = (1.0 + grads[first, 0] * dy[first, rows, cols] / size
             + grads[first, 1] * dx[first, rows, cols] / size)
    img = colours[first] * shade[..., None]
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render_scenes(n: int, size: int, seed: int, photo_fraction: float = 0.5) -> np.ndarray:
    """``n`` scenes (N×size×size×3 float32, linear light), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.float32)
    for k in range(n):
        if rng.random() < photo_fraction:
            out[k] = photo_scene(size, rng)
        else:
            out[k] = dead_leaves(size, rng)
    return out
