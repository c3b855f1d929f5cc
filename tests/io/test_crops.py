"""Crops and tiles: fixed-size views of an image, never a resize."""

from __future__ import annotations

import numpy as np
import pytest

from genprint.io.crops import center_crop, random_crop, tile_positions, tiles
from genprint.io.images import ImageError


def _ramp(h: int, w: int) -> np.ndarray:
    return np.arange(h * w * 3, dtype=np.int64).reshape(h, w, 3)


def test_center_crop_takes_the_middle_pixels_unchanged() -> None:
    img = _ramp(10, 12)
    crop = center_crop(img, 4)
    np.testing.assert_array_equal(crop, img[3:7, 4:8])


def test_center_crop_alignment_keeps_the_grid_phase() -> None:
    crop = center_crop(_ramp(21, 21), 8, align=8)
    np.testing.assert_array_equal(crop, _ramp(21, 21)[0:8, 0:8])


def test_random_crop_is_seeded_and_in_bounds() -> None:
    img = _ramp(40, 30)
    a = random_crop(img, 16, np.random.default_rng(5))
    b = random_crop(img, 16, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 16, 3)
    offsets = {tuple(np.argwhere(img == random_crop(img, 16, np.random.default_rng(s))[0, 0, 0])[0][:2])
               for s in range(20)}
    assert len(offsets) > 5


def test_tiles_do_not_overlap_and_cover_a_centred_grid() -> None:
    img = _ramp(70, 100)
    t = tiles(img, 32, max_tiles=None)
    assert t.shape == (6, 32, 32, 3)  # 2 rows × 3 cols
    values = [set(x.ravel().tolist()) for x in t]
    assert all(not (values[i] & values[j]) for i in range(6) for j in range(i + 1, 6))
    assert tile_positions(70, 100, 32)[0] == (3, 2)


def test_tile_cap_takes_an_even_deterministic_subset() -> None:
    pos = tile_positions(320, 320, 32, max_tiles=10)
    assert len(pos) == 10 and pos == tile_positions(320, 320, 32, max_tiles=10)
    assert pos[0] == (0, 0) and pos[-1] == (288, 288)


def test_too_small_images_are_refused_not_upsampled() -> None:
    with pytest.raises(ImageError) as err:
        tiles(_ramp(20, 40), 32)
    assert err.value.code == "too_small"
    with pytest.raises(ImageError):
        center_crop(_ramp(31, 31), 32)
