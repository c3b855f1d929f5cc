"""Pseudo-sources: extra training classes made by re-synthesising training images.

The embedding of ``metric`` is trained on a handful of known sources, and must still place a
generator it never saw in a tight cluster of its own (open-set rejection, and enrolment from a
few images). With few training classes it learns what tells *these* sources apart, not what
makes a generator's trace. Pseudo-sources add classes that differ only the way generators
differ: by the last upsampling stage that wrote the pixels.

Pseudo-source ``k`` is a fixed random operator applied to training images of any source:

1. 2× box downsampling (16×16 from 32×32), which removes most of the image's own trace;
2. 2× upsampling by a stride-2 transposed convolution with a fixed random 4×4 kernel mixing the
   three channels — a bilinear kernel plus a random perturbation of relative size
   ``strength`` (smaller across channels), normalised to unit DC gain per output phase so the image content survives —
   as in a generator's last layer;
3. a fixed random 3×3 post-filter (identity plus a small perturbation, unit DC gain), then
   rounding to 8 bits.

With ``kind="filter"`` the operator has no resampling: a fixed random 5×5 filter per channel,
a mix of the identity and a Gaussian blur of random width plus a small random part (unit DC
gain), then rounding to 8 bits. These pseudo-sources differ the way generators that never
upsample (pixel-space diffusion) differ from cameras and from each other: by how they shape the
noise spectrum, not by periodic upsampling traces.

These images are *loss classes only*: they get no reference points and no threshold, and the
attributor never predicts them. Deterministic per ``(seed, k)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PSEUDO_STRENGTH = 0.5
"""Relative size of the random part of each pseudo-source's upsampling kernel."""
CROSS_CHANNEL = 0.2
"""Size of its cross-channel part relative to the within-channel part."""


def _bilinear_kernel() -> np.ndarray:
    """4×4 kernel of 2× bilinear upsampling by a stride-2 transposed convolution."""
    k1 = np.array([0.25, 0.75, 0.75, 0.25])
    return np.outer(k1, k1)


def _operator(seed: int, k: int, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The upsampling kernel (3×3×4×4, transposed-conv layout) and 3×3 post-filter
    (3×1×3×3, per channel) of pseudo-source ``k``."""
    rng = np.random.default_rng([int(seed) % 2**32, 7919, k])
    base = _bilinear_kernel()
    up = np.zeros((3, 3, 4, 4))
    for c in range(3):
        up[c, c] = base
    mix = np.full((3, 3, 1, 1), CROSS_CHANNEL)  # channels mix a little, as in a real layer
    mix[np.arange(3), np.arange(3)] = 1.0
    up = up + strength * mix * rng.normal(0.0, base.mean(), size=up.shape)
    # unit DC gain for each output phase (2×2 positions of the stride) and output channel
    for py in range(2):
        for px in range(2):
            gain = up[:, :, py::2, px::2].sum(axis=(0, 2, 3), keepdims=True)
            up[:, :, py::2, px::2] /= np.where(np.abs(gain) < 1e-3, 1e-3, gain)
    post = np.zeros((3, 1, 3, 3))
    post[:, 0, 1, 1] = 1.0
    post = post + 0.1 * rng.normal(size=post.shape)
    post /= post.sum(axis=(2, 3), keepdims=True)
    return torch.tensor(up, dtype=torch.float32), torch.tensor(post, dtype=torch.float32)


PSEUDO_KINDS = ("upsample", "filter")
"""The pseudo-source operators: a random 2× upsampling stage, or a random 5×5 filter."""


def _filter_kernel(seed: int, k: int) -> torch.Tensor:
    """The 5×5 per-channel filter (3×1×5×5) of ``filter`` pseudo-source ``k``."""
    rng = np.random.default_rng([int(seed) % 2**32, 15485863, k])
    mix, sigma = rng.uniform(0.3, 1.0), rng.uniform(0.4, 1.5)
    r = np.arange(5) - 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    g /= g.sum()
    delta = np.zeros((5, 5))
    delta[2, 2] = 1.0
    base = (1 - mix) * delta + mix * g
    kern = np.stack([base + 0.03 * rng.normal(size=(5, 5)) for _ in range(3)])
    kern /= kern.sum(axis=(1, 2), keepdims=True)
    return torch.tensor(kern[:, None], dtype=torch.float32)


def refilter(images: np.ndarray, seed: int, k: int) -> np.ndarray:
    """Images (N×H×W×3 uint8) as ``filter`` pseudo-source ``k`` would write them."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"pseudo-sources need N×H×W×3 images, got {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
        out = torch.nn.functional.conv2d(x, _filter_kernel(seed, k), groups=3)
    out = out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(out)


def resynthesise(images: np.ndarray, seed: int, k: int,
                 strength: float = PSEUDO_STRENGTH) -> np.ndarray:
    """Images (N×H×W×3 uint8, even H and W) as pseudo-source ``k`` would write them."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] % 2 or images.shape[2] % 2:
        raise ValueError(f"pseudo-sources need N×H×W×3 images with even sides, got "
                         f"{images.shape}")
    up, post = _operator(seed, k, strength)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        small = torch.nn.functional.avg_pool2d(x, 2)
        big = torch.nn.functional.conv_transpose2d(small, up, stride=2, padding=1)
        big = torch.nn.functional.pad(big, (1, 1, 1, 1), mode="replicate")
        out = torch.nn.functional.conv2d(big, post, groups=3)
    out = out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(out)


def pseudo_source_images(images: Sequence[np.ndarray], n_sources: int, per_source: int,
                         seed: int, kind: str = "upsample") -> tuple[list[np.ndarray], np.ndarray]:
    """``n_sources`` pseudo-sources of ``per_source`` images each, made from random training
    images (of any source, cropped to an even size); returns the images and their pseudo-source
    index (0..n_sources−1). ``kind`` is one of :data:`PSEUDO_KINDS`."""
    if kind not in PSEUDO_KINDS:
        raise ValueError(f"pseudo-source kind must be one of {PSEUDO_KINDS}, got {kind!r}")
    if n_sources < 1 or not len(images):
        return [], np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([int(seed) % 2**32, 104729])
    out: list[np.ndarray] = []
    labels: list[int] = []
    for k in range(n_sources):
        pick = rng.choice(len(images), size=min(per_source, len(images)), replace=False)
        # group by shape: images of one size go through the operator together
        by_shape: dict[tuple[int, int], list[np.ndarray]] = {}
        for i in pick:
            img = images[int(i)]
            h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
            by_shape.setdefault((h, w), []).append(img[:h, :w])
        for group in by_shape.values():
            made = (resynthesise(np.stack(group), seed, k) if kind == "upsample"
                    else refilter(np.stack(group), seed, k))
            out.extend(made)
            labels.extend([k] * len(made))
    return out, np.array(labels, dtype=np.int64)
