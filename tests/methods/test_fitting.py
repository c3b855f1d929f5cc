"""Fitting on files: sources that lose every file are refused, data problems become warnings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genprint.io.sources import Item
from genprint.methods.baseline import BaselineAttributor
from genprint.methods.fitting import FEW_VALIDATION_IMAGES, fit_on_items
from tests.conftest import textured


def _items(root: Path, source: str, n: int, side: int, split: str, period: int) -> list[Item]:
    rng = np.random.default_rng(period * 100 + n + side)
    folder = root / source / split
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        path = folder / f"{k:02d}.png"
        Image.fromarray(textured(rng, side, side, period)).save(path)
        out.append(Item(path, source, split))
    return out


def test_a_source_whose_files_are_all_refused_is_an_error_naming_it(tmp_path: Path) -> None:
    train = _items(tmp_path, "a", 6, 48, "train", 2) + _items(tmp_path, "tiny", 6, 16, "train", 3)
    val = _items(tmp_path, "a", 3, 48, "val", 2) + _items(tmp_path, "tiny", 3, 48, "val", 3)
    with pytest.raises(ValueError, match=r"every training image of these sources was refused: "
                                         r"'tiny' \(6 file\(s\); e\.g\. .*smaller"):
        fit_on_items(BaselineAttributor(), train, val)


def test_lost_files_and_small_validation_sets_become_warnings(tmp_path: Path) -> None:
    small = [replace(i, source="b") for i in _items(tmp_path, "b2", 5, 16, "train", 3)]
    train = _items(tmp_path, "a", 6, 48, "train", 2) + _items(tmp_path, "b", 2, 48, "train", 3)
    train += small  # b: 2 usable of 7 training files
    val = _items(tmp_path, "a", 3, 48, "val", 2) + _items(tmp_path, "b", 3, 48, "val", 3)
    model = BaselineAttributor()
    errors = fit_on_items(model, train, val)
    assert len(errors) == 5
    warnings = model.training_info_["warnings"]
    assert any(w.startswith("b: only 2 of its 7 training images") for w in warnings)
    assert any(f"fewer than {FEW_VALIDATION_IMAGES} validation images for: a (3), b (3)" in w
               for w in warnings)


def test_formats_or_sizes_that_tell_sources_apart_are_flagged(tmp_path: Path) -> None:
    from genprint.methods.fitting import confound_warnings

    img32, img48 = np.zeros((32, 32, 3), np.uint8), np.zeros((48, 48, 3), np.uint8)
    items = [Item(Path(f"a/{k}.png"), "a") for k in range(4)]
    items += [Item(Path(f"b/{k}.jpg"), "b") for k in range(4)]
    warnings = confound_warnings(items, [img32] * 8)
    assert len(warnings) == 1 and "share no file format (a: png; b: jpg)" in warnings[0]
    # one source with a size no other source has, in a quarter of its images
    items = [Item(Path(f"a/{k}.png"), "a") for k in range(4)]
    items += [Item(Path(f"b/{k}.png"), "b") for k in range(4)]
    warnings = confound_warnings(items, [img32] * 7 + [img48])
    assert warnings == [("only b has image sizes 48×48 (1 of 4): a model can learn that instead "
                         "of the source; make image sizes alike across sources")]
    assert confound_warnings(items, [img32] * 8) == []
