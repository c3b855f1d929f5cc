"""Reading many files: input order kept, one result per file, errors per file, hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genprint.io.batches import iter_images, load_items


@pytest.fixture
def mixed(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for k in range(40):  # more than one chunk of 16, so the pool's ordering is exercised
        p = tmp_path / f"{k:02d}.png"
        if k % 7 == 3:
            p.write_bytes(b"" if k % 2 else b"not an image at all")
        else:
            Image.fromarray(rng.integers(0, 256, (8 + k % 5, 12, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    paths.append(tmp_path / "missing.png")
    return paths


@pytest.mark.parametrize("workers", [1, 3])
def test_one_result_per_file_in_input_order(mixed: list[Path], workers: int) -> None:
    results = list(iter_images(mixed, workers=workers))
    assert [r.path for r in results] == mixed
    for r in results:
        if r.path.name == "missing.png":
            assert not r.ok and r.sha256 is None
            continue
        assert r.sha256 == hashlib.sha256(r.path.read_bytes()).hexdigest()
        k = int(r.path.stem)
        assert r.ok == (k % 7 != 3)
        if r.ok:
            assert r.pixels.shape == (8 + k % 5, 12, 3)
            np.testing.assert_array_equal(r.pixels, np.asarray(Image.open(r.path)))
    path, _pixels, digest, notes = results[0]  # a plain tuple for unpacking
    assert notes == ()  # 8-bit RGB PNGs: the pixels as stored
    assert path == mixed[0] and digest == results[0].sha256


def test_load_items_keeps_indices_and_errors(mixed: list[Path]) -> None:
    images, kept, errors = load_items(mixed, min_size=10)
    bad = {p for p in mixed if p.name == "missing.png" or int(p.stem) % 7 == 3
           or 8 + int(p.stem) % 5 < 10}
    assert {p for p, _ in errors} == bad
    assert [mixed[k] for k in kept] == [p for p in mixed if p not in bad]
    assert all(img.shape[0] >= 10 for img in images)


def test_unusable_paths_are_reported_per_file(tmp_path: Path) -> None:
    from genprint.io.sources import read_manifest, scan_inputs

    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    paths = [loop, good / "x.png", tmp_path / ("n" * 300 + ".png"), good]
    results = list(iter_images(scan_inputs(paths)))
    assert [r.ok for r in results] == [False, False, False, True]
    assert all(r.pixels.code == "unreadable" for r in results[:3])
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,source\n" + "".join(f"{p},a\n" for p in paths))
    assert len(read_manifest(manifest).missing()) == 3


def test_images_of_one_colour_are_refused_for_learning_only(tmp_path: Path) -> None:
    flat = tmp_path / "flat.png"
    Image.new("RGB", (40, 30), (9, 90, 200)).save(flat)
    busy = tmp_path / "busy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)).save(busy)
    plain = list(iter_images([flat, busy]))
    assert plain[0].ok and plain[1].ok  # attribution refuses it in its own step
    strict = list(iter_images([flat, busy], refuse_uniform=True))
    assert not strict[0].ok and strict[0].pixels.code == "no_content"  # type: ignore[union-attr]
    assert strict[0].sha256 == plain[0].sha256 == hashlib.sha256(flat.read_bytes()).hexdigest()
    assert strict[1].ok
    _, kept, errors = load_items([flat, busy])  # training and enrolment readers
    assert kept == [1] and [(p, e.code) for p, e in errors] == [(flat, "no_content")]
    assert "no trace" in errors[0][1].reason
