"""Uniform images: no trace to attribute, refused per file with ``no_content`` by every method."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genprint.io.content import is_uniform


def test_uniform_means_one_exact_colour_on_99_percent() -> None:
    rng = np.random.default_rng(0)
    solid = np.zeros((40, 50, 3), np.uint8) + np.array([200, 30, 90], np.uint8)
    assert is_uniform(solid)
    speckled = solid.copy()
    speckled.reshape(-1, 3)[rng.choice(2000, 19, replace=False)] = 7  # 0.95% other pixels
    assert is_uniform(speckled)
    speckled.reshape(-1, 3)[rng.choice(2000, 40, replace=False)] = 8  # now ~2.9%
    assert not is_uniform(speckled)
    assert not is_uniform(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    grey_ramp = np.repeat(np.arange(50, dtype=np.uint8)[None, :, None], 40, 0).repeat(3, 2)
    assert not is_uniform(grey_ramp)  # smooth, not uniform


def test_large_images_are_counted_exactly_whatever_the_layout() -> None:
    big = np.full((1100, 1000, 3), 128, np.uint8)
    assert is_uniform(big)
    big[:, :20] = 0  # 2% of another colour in one band
    assert not is_uniform(big)
    framed = np.full((1008, 2048, 3), 50, np.uint8)  # 99.9% one colour, other first and last
    framed[:, 0] = framed[:, -1] = 200  # columns (a regular grid of samples could see only them)
    assert is_uniform(framed)
    noisy = np.random.default_rng(1).integers(0, 256, (1100, 1000, 3), dtype=np.uint8)
    assert not is_uniform(noisy)
    exactly = np.full((100, 100, 3), 9, np.uint8)
    exactly.reshape(-1, 3)[:100] = 1  # exactly 99% one colour: uniform
    assert is_uniform(exactly)
    exactly.reshape(-1, 3)[100] = 1  # one pixel more of the other: not
    assert not is_uniform(exactly)


def test_every_method_refuses_a_uniform_image(toy_sources: Path) -> None:
    """The check is in Attributor.attribute_arrays, which every method shares."""
    from genprint.methods.baseline import BaselineAttributor
    from tests.conftest import textured

    rng = np.random.default_rng(2)
    imgs = [textured(rng, 36, 40, p) for p in (2, 3) for _ in range(6)]
    labels = ["a"] * 6 + ["b"] * 6
    model = BaselineAttributor(patch_size=32).fit(imgs[::2], labels[::2], imgs[1::2],
                                                  labels[1::2])
    flat = np.full((36, 40, 3), 128, np.uint8)
    good, solid = model.attribute_arrays([imgs[0], flat])
    assert good.ok and good.label is not None
    assert solid.error_code == "no_content" and solid.label is None and not solid.scores
