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


def test_formats_or_sizes_that_tell_sources_apart_are_flagged() -> None:
    from genprint.methods.fitting import confound_warnings

    def img(side: int) -> tuple[int, int, int]:
        return (side, side, 3)  # a decoded image's shape

    items = [Item(Path(f"a/{k}.png"), "a") for k in range(4)]
    items += [Item(Path(f"b/{k}.JPEG"), "b") for k in range(4)]
    [warning] = confound_warnings(items, [img(32)] * 8)
    assert warning.startswith("the file format alone names the source of 100% of the training "
                              "images (guessing the largest source: 50%)")
    assert "a: png; b: jpg" in warning
    # sizes that split the sources 49 to 1 each way are a confound, though both sources have both
    items = [Item(Path(f"{s}/{k}.png"), s) for s in "ab" for k in range(50)]
    sizes = [img(64)] * 49 + [img(96)] + [img(96)] * 49 + [img(64)]
    [warning] = confound_warnings(items, sizes)
    assert warning.startswith("the image size alone names the source of 98%")
    # photographs of varied sizes, drawn alike for both sources, are not
    rng = np.random.default_rng(0)
    varied = [img(int(side)) for side in rng.integers(64, 400, 100)]
    assert confound_warnings(items, varied) == []
    # real photographs in JPEG, two generators in PNG: the format names only 2 in 3 images,
    # but real's format is its own
    items = [Item(Path(f"{s}/{k}.{'jpg' if s == 'real' else 'png'}"), s)
             for s in ("real", "gan-a", "gan-b") for k in range(25)]
    [warning] = confound_warnings(items, [img(32)] * 75)
    assert warning.startswith("real: 25 of its 25 training images are jpg, against 0 of the "
                              "other sources' 50 (mostly png)")
    # a PNG among real's images and a JPEG among the generators' do not clear it ...
    items[0], items[30] = Item(Path("real/0.png"), "real"), Item(Path("gan-a/x.jpg"), "gan-a")
    assert len(confound_warnings(items, [img(32)] * 75)) == 1
    # ... a generator with JPEGs too does
    items[25:35] = [Item(Path(f"gan-a/{k}.jpg"), "gan-a") for k in range(10)]
    assert confound_warnings(items, [img(32)] * 75) == []
    # .tif and .tiff are one format
    items = [Item(Path(f"{s}/{k}.{'tif' if k % 2 else 'tiff'}"), s) for s in "ab" for k in range(4)]
    assert confound_warnings(items, [img(32)] * 8) == []


def test_one_picture_under_two_sources_or_in_two_splits_is_flagged(tmp_path: Path) -> None:
    train = _items(tmp_path, "a", 6, 48, "train", 2) + _items(tmp_path, "b", 6, 48, "train", 3)
    val = _items(tmp_path, "a", 3, 48, "val", 2) + _items(tmp_path, "b", 3, 48, "val", 3)
    clean = BaselineAttributor()
    fit_on_items(clean, train, val)
    assert not any("same pixels" in w for w in clean.training_info_["warnings"])
    # a's first training picture, re-saved as TIFF (other bytes, same pixels), labelled b;
    # b's first training picture copied into b's validation images
    Image.open(train[0].path).save(tmp_path / "copy.tif")
    Image.open(train[6].path).save(tmp_path / "b-again.png")
    model = BaselineAttributor()
    fit_on_items(model, [*train, Item(tmp_path / "copy.tif", "b", "train")],
                 [*val, Item(tmp_path / "b-again.png", "b", "val")])
    warnings = model.training_info_["warnings"]
    [two] = [w for w in warnings if "under two or more sources" in w]
    assert two.startswith("1 picture(s)") and "00.png (a, training) = copy.tif (b, training)" in two
    [both] = [w for w in warnings if "also training pictures" in w]
    assert both.startswith("1 validation picture(s)") and "b-again.png (b, validation)" in both


def test_the_fitted_pictures_are_kept_with_the_model(tmp_path: Path) -> None:
    from genprint.io.fingerprint import fingerprint
    from genprint.io.images import read_image
    from genprint.methods.base import load_attributor

    train = _items(tmp_path, "a", 6, 48, "train", 2) + _items(tmp_path, "b", 6, 48, "train", 3)
    val = _items(tmp_path, "a", 3, 48, "val", 2) + _items(tmp_path, "b", 3, 48, "val", 3)
    model = BaselineAttributor()
    fit_on_items(model, train, val)
    expected = {fingerprint(read_image(i.path)) for i in [*train, *val]}
    assert model.training_fingerprints_ is not None
    assert {r.tobytes() for r in model.training_fingerprints_} == expected
    loaded = load_attributor(model.save(tmp_path / "model"))
    assert loaded.training_fingerprints_ is not None
    assert np.array_equal(loaded.training_fingerprints_, model.training_fingerprints_)
    # each answer says whether its image is one of those pictures (pixels, not file bytes)
    seen_img, new_img = read_image(val[0].path), read_image(val[0].path)[::-1].copy()
    rows = loaded.attribute_arrays([seen_img, new_img])
    assert [r.seen_in_training for r in rows] == [True, False]
    # fitted without files (the Python API's fit), a model keeps none
    direct = BaselineAttributor().fit([read_image(i.path) for i in train],
                                      [str(i.source) for i in train],
                                      [read_image(i.path) for i in val],
                                      [str(i.source) for i in val])
    assert load_attributor(direct.save(tmp_path / "direct")).training_fingerprints_ is None
    assert direct.attribute_arrays([seen_img])[0].seen_in_training is None


def test_answers_say_how_a_file_was_read(tmp_path: Path) -> None:
    train = _items(tmp_path, "a", 6, 48, "train", 2) + _items(tmp_path, "b", 6, 48, "train", 3)
    val = _items(tmp_path, "a", 3, 48, "val", 2) + _items(tmp_path, "b", 3, 48, "val", 3)
    model = BaselineAttributor()
    fit_on_items(model, train, val)
    grey = np.random.default_rng(1).integers(0, 4096, (48, 48)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "sensor.png")  # 12-bit values in a 16-bit file
    plain, sensor = model.attribute([train[0].path, tmp_path / "sensor.png"])
    assert plain.notes is None
    assert sensor.ok and "16-bit grey values reduced to 8 bits" in str(sensor.notes)
    assert "16 grey level(s) remain" in str(sensor.notes)


def test_the_card_identifies_the_data_by_content_and_labels(tmp_path: Path) -> None:
    from genprint.io.fingerprint import dataset_digest

    train = _items(tmp_path, "a", 6, 48, "train", 2) + _items(tmp_path, "b", 6, 48, "train", 3)
    val = _items(tmp_path, "a", 3, 48, "val", 2) + _items(tmp_path, "b", 3, 48, "val", 3)
    model = BaselineAttributor()
    fit_on_items(model, train, val)
    digest = model.training_info_["data_digest"]
    assert digest == dataset_digest([*reversed(val), *train])  # order does not count ...
    Image.open(train[0].path).save(tmp_path / "same.tif")  # ... nor the file format
    assert digest == dataset_digest([replace(train[0], path=tmp_path / "same.tif"),
                                     *train[1:], *val])
    assert digest != dataset_digest([replace(train[0], source="b"), *train[1:], *val])  # label
    assert digest != dataset_digest([replace(train[0], split="val"), *train[1:], *val])  # split
    assert digest != dataset_digest([*train[1:], *val])  # one image fewer


def test_a_model_with_decomposed_source_names_reads_them_composed(tmp_path: Path) -> None:
    import json

    from genprint.methods.base import load_attributor
    from tests.conftest import rewrite_card

    train = _items(tmp_path, "a", 6, 48, "train", 2) + _items(tmp_path, "b", 6, 48, "train", 3)
    val = _items(tmp_path, "a", 3, 48, "val", 2) + _items(tmp_path, "b", 3, 48, "val", 3)
    model = BaselineAttributor()
    fit_on_items(model, train, val)
    out = model.save(tmp_path / "m")
    card = json.loads((out / "card.json").read_text())
    card["classes"] = ["a", "bu\u0308"]  # as a model trained on macOS folder names kept them
    rewrite_card(out / "card.json", card)
    assert load_attributor(out).classes_ == ["a", "b\u00fc"]  # as data is read now


def test_an_image_of_one_colour_is_left_out_of_training(tmp_path: Path) -> None:
    train = _items(tmp_path, "a", 6, 48, "train", 2) + _items(tmp_path, "b", 6, 48, "train", 3)
    val = _items(tmp_path, "a", 3, 48, "val", 2) + _items(tmp_path, "b", 3, 48, "val", 3)
    Image.new("RGB", (48, 48), (128, 128, 128)).save(tmp_path / "grey.png")
    train.append(Item(tmp_path / "grey.png", "a", "train"))
    model = BaselineAttributor()
    errors = fit_on_items(model, train, val)
    assert [(p.name, e.code) for p, e in errors] == [("grey.png", "no_content")]
    assert model.training_info_["n_train"] == 12
    from genprint.io.fingerprint import dataset_digest  # the data check leaves it out too

    assert dataset_digest([*train, *val]) == model.training_info_["data_digest"]
