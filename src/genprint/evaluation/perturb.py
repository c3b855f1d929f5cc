"""Robustness conditions: seeded per-image perturbations of test images.

Each perturbation is one named condition, applied to real and generated test images alike
(thresholds are never re-calibrated for it). Every perturbation is a function
``(image, seed) -> image`` on ``(H, W, 3)`` uint8 arrays, deterministic per ``(name, seed)``:

``jpeg95``, ``jpeg75``, ``jpeg50``
    A JPEG round trip through Pillow at quality 95 / 75 / 50, with 4:2:0 chroma subsampling
    (set explicitly, so the result does not depend on Pillow's default).
``resize0.5``
    Downscale by 0.5 with area averaging (Pillow ``BOX``), then back to the original size with
    bicubic interpolation. A deliberate perturbation, not preprocessing: the size is unchanged
    but the high frequencies are gone.
``blur0.5``, ``blur1``
    Gaussian blur with standard deviation 0.5 / 1 pixel (exact separable kernel truncated at
    4 σ, borders mirrored), per channel.
``crop``
    A random crop removing 10–20 % of each side (fraction and offset drawn independently per
    axis) that is **not** resized back: the image becomes smaller. A side never drops below
    ``min_size`` (the method's crop / tile size) — it is then kept at ``min_size``, or left
    whole if it was already smaller.
``noise``
    Additive Gaussian noise with a standard deviation of 2 levels on the 8-bit scale (2/255 of
    the range), rounded and clipped to 0–255.

Deterministic perturbations (JPEG, resize, blur) ignore the seed; random ones (crop, noise)
draw from a generator seeded by ``(crc32(name), seed)``.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image

from genprint.io.images import is_rgb8
from genprint.registry import Registry

Perturbation = Callable[[np.ndarray, int], np.ndarray]
"""``perturb(image, seed) -> image``: (H, W, 3) uint8 in, (H', W', 3) uint8 out."""

PERTURBATIONS: Registry[Callable[[np.ndarray, int, int], np.ndarray]] = Registry("perturbation")
"""Perturbation implementations ``fn(image, seed, min_size)``; use :func:`perturbation`."""

ALL = "all"
"""Name that expands to every perturbation."""

CROP_FRACTION = (0.10, 0.20)
"""Range of the share of each side removed by ``crop``."""

NOISE_STD_LEVELS = 2.0
"""Standard deviation of ``noise`` in 8-bit levels (2/255 of the range)."""

_ORDER: list[str] = []


def _register(name: str, description: str) -> Callable[[Callable], Callable]:
    def decorator(fn: Callable) -> Callable:
        PERTURBATIONS.add(name, fn, description=description)
        _ORDER.append(name)
        return fn

    return decorator


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(name.encode("utf-8")), int(seed) % 2**63])


def _check(image: np.ndarray) -> None:
    if not is_rgb8(image):
        raise ValueError(f"a perturbation needs an (H, W, 3) uint8 image, got {image.dtype} "
                         f"{image.shape}")


# --------------------------------------------------------------------------------- JPEG
def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """An (H, W, 3) uint8 image saved as JPEG at ``quality`` (Pillow, 4:2:0 chroma) and decoded
    again (the ``jpeg*`` perturbations; ``metric``'s JPEG augmentation)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()


for _q in (95, 75, 50):
    _register(f"jpeg{_q}", f"JPEG round trip at quality {_q} (Pillow, 4:2:0)")(
        lambda image, seed, min_size, _q=_q: jpeg_round_trip(image, _q))


# --------------------------------------------------------------------------------- resize
@_register("resize0.5", "downscale ×0.5 (area), back to the original size (bicubic)")
def _resize_half(image: np.ndarray, seed: int, min_size: int) -> np.ndarray:
    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((max(1, round(w * 0.5)), max(1, round(h * 0.5))),
                                          Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8).copy()


# --------------------------------------------------------------------------------- blur
def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Exact separable Gaussian blur (σ in pixels, kernel to 4 σ, mirrored borders), uint8."""
    radius = max(1, math.ceil(4 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, weight in enumerate(kernel):
            acc += weight * np.take(padded, np.arange(k, k + n), axis=axis)
        out = acc
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


for _s in (0.5, 1.0):
    _register(f"blur{_s:g}", f"Gaussian blur, σ = {_s:g} px")(
        lambda image, seed, min_size, _s=_s: gaussian_blur(image, _s))


# --------------------------------------------------------------------------------- crop
def _crop_side(rng: np.random.Generator, side: int, min_size: int) -> tuple[int, int]:
    """(offset, length) along one axis: removes 10–20 % of ``side``, never below ``min_size``."""
    fraction = rng.uniform(*CROP_FRACTION)
    length = side - round(fraction * side)
    length = max(length, min(side, min_size), 1)
    offset = int(rng.integers(0, side - length + 1))
    return offset, length


@_register("crop", "random crop removing 10–20 % of each side, not resized back "
                   "(never below the method's min size)")
def _crop(image: np.ndarray, seed: int, min_size: int) -> np.ndarray:
    rng = _rng("crop", seed)
    top, h = _crop_side(rng, image.shape[0], min_size)
    left, w = _crop_side(rng, image.shape[1], min_size)
    return image[top : top + h, left : left + w].copy()


# --------------------------------------------------------------------------------- noise
@_register("noise", f"additive Gaussian noise, σ = {NOISE_STD_LEVELS:g} levels of 255")
def _noise(image: np.ndarray, seed: int, min_size: int) -> np.ndarray:
    rng = _rng("noise", seed)
    noisy = image.astype(np.float64) + rng.normal(0.0, NOISE_STD_LEVELS, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------- public API
def perturbation_names() -> list[str]:
    """Every perturbation name, in the documented order (JPEG, resize, blur, crop, noise)."""
    return list(_ORDER)


def describe(name: str) -> str:
    """One-line description of a perturbation (for tables and reports)."""
    return str(PERTURBATIONS.meta(name)["description"])


def expand_perturbations(names: Iterable[str]) -> list[str]:
    """Resolve user-given names: ``all`` expands to every perturbation; duplicates are dropped.

    Raises:
        genprint.registry.RegistryError: for a name that is not a perturbation (the message
            lists the known ones).
    """
    out: list[str] = []
    for name in names:
        for resolved in perturbation_names() if name == ALL else [name]:
            PERTURBATIONS.get(resolved)
            if resolved not in out:
                out.append(resolved)
    return out


def perturbation(name: str, *, min_size: int = 1) -> Perturbation:
    """The perturbation ``name`` as ``perturb(image, seed) -> image``.

    ``min_size`` matters for ``crop`` only: no side of a cropped image falls below it (see the
    module doc). The result is deterministic per ``(name, seed)`` and never modifies its input.
    """
    fn = PERTURBATIONS.get(name)

    def perturb(image: np.ndarray, seed: int) -> np.ndarray:
        _check(image)
        return fn(image, seed, min_size)

    perturb.__name__ = f"perturb_{name}"
    perturb.__doc__ = describe(name)
    return perturb
