"""Pixel fingerprints: one per picture, whatever file holds it; any pixel change is another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genprint.io.fingerprint import as_keys, check_fingerprints, fingerprint, fingerprints
from genprint.io.images import read_image


def test_the_same_pixels_in_other_files_have_one_fingerprint(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "b.tif")
    Image.fromarray(img).save(tmp_path / "c.png", compress_level=9, pnginfo=None)
    prints = {fingerprint(read_image(tmp_path / n)) for n in ("a.png", "b.tif", "c.png")}
    assert prints == {fingerprint(img)}


def test_one_pixel_value_or_the_shape_changes_the_fingerprint() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    other = img.copy()
    other[3, 5, 2] = 1
    assert fingerprint(img) != fingerprint(other)
    assert fingerprint(img) != fingerprint(img.reshape(6, 4, 3))  # same bytes, other shape
    assert fingerprint(img) != fingerprint(img.astype(np.uint16))
    assert fingerprint(img) == fingerprint(np.asfortranarray(img))  # memory layout does not


def test_fingerprint_arrays_round_trip_and_damage_is_refused() -> None:
    imgs = [np.full((3, 3, 3), v, np.uint8) for v in (0, 1, 0)]
    rows = fingerprints(imgs)
    assert rows.shape == (3, 24) and rows.dtype == np.uint8
    keys = as_keys(rows)
    assert keys[0] == keys[2] == fingerprint(imgs[0]) and keys[1] != keys[0]
    assert check_fingerprints(rows) is not None
    with pytest.raises(ValueError, match=r"\(N, 24\) uint8"):
        check_fingerprints(rows[:, :8])
    with pytest.raises(ValueError, match=r"\(N, 24\) uint8"):
        check_fingerprints(rows.astype(np.int64))


def test_a_picture_set_answers_by_size_first() -> None:
    from genprint.io.fingerprint import PictureSet

    imgs = [np.full((3, 4, 3), v, np.uint8) for v in (0, 1)]
    pictures = PictureSet(fingerprints(imgs))
    assert len(pictures) == 2
    assert imgs[1].copy() in pictures and np.full((3, 4, 3), 2, np.uint8) not in pictures
    assert np.zeros((4, 3, 3), np.uint8) not in pictures  # another size: no hash needed
    assert fingerprint(imgs[0])[:8] == bytes([0, 0, 0, 3, 0, 0, 0, 4])  # height, width first
