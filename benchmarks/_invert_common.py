"""Shared by the inversion benchmarks: member / non-member image sets with their own seeds.

Seeds come from strings no other part of genprint uses (``invert-bench-...``), so the images are
disjoint from calibration samples (``genprint-calibration:NAME``) and from benchmark folders.
"""

from __future__ import annotations

import zlib

import numpy as np


def seed(*parts: object) -> int:
    """A stable seed from a tag."""
    return zlib.crc32(":".join(map(str, ("invert-bench", *parts))).encode()) & 0x7FFFFFFF


def roc_auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """AUC of "lower score = member" (probability a member scores below a non-member)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    return float(roc_auc_score(y, -np.r_[members, non_members]))


_SAMPLES: dict[tuple[str, int], np.ndarray] = {}


def samples(name: str, n: int, tag: str) -> np.ndarray:
    """``n`` uint8 samples of zoo generator ``name`` (cached per process)."""
    from genprint.verify.generators import resolve_one

    key = (f"{name}:{tag}", n)
    if key not in _SAMPLES:
        _SAMPLES[key] = resolve_one(f"zoo:{name}").sample(n, seed(tag, name))
    return _SAMPLES[key]


def real_images(n: int, size: int, prefix: str = "") -> np.ndarray:
    """``n`` real camera images: half from training cameras, half from held-out ones."""
    from genprint.world.cameras import camera_images

    a, _ = camera_images(n - n // 2, size, seed(prefix + "real"))
    b, _ = camera_images(n // 2, size, seed(prefix + "real-held-out"), held_out=True)
    return np.concatenate([a, b])


def other_samples(name: str, others: list[str], n_total: int | None = None,
                  per_other: int | None = None, prefix: str = "") -> tuple[np.ndarray, list[str]]:
    """Samples of the other generators: ``per_other`` each, or ``n_total`` spread over them."""
    if not others:
        return np.zeros((0, 32, 32, 3), np.uint8), []
    if per_other is None:
        counts = [n_total // len(others) + (k < (n_total or 0) % len(others))
                  for k in range(len(others))]
    else:
        counts = [per_other] * len(others)
    imgs, names = [], []
    for o, c in zip(others, counts, strict=True):
        if c:
            imgs.append(samples(o, c, prefix + "other"))
            names += [o] * c
    return np.concatenate(imgs), names
