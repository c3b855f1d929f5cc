"""The baseline attributor: real separation on toy sources, validation-only thresholds, I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import genprint
from genprint.io.batches import load_items
from genprint.io.sources import load_dataset, with_split
from genprint.methods.base import NotFittedError
from genprint.methods.baseline import BaselineAttributor
from genprint.methods.thresholds import score_threshold
from tests.conftest import rewrite_card, textured


def _fit(root: Path, sources: list[str] | None = None) -> BaselineAttributor:
    ds = with_split(load_dataset(root), (0.5, 0.25, 0.25), seed=0)
    if sources:
        ds = ds.select(sources=sources)
    tr, va = ds.select("train"), ds.select("val")
    tr_imgs, _, _ = load_items([i.path for i in tr.items])
    va_imgs, _, _ = load_items([i.path for i in va.items])
    return BaselineAttributor(patch_size=32).fit(
        tr_imgs, [i.source for i in tr.items], va_imgs, [i.source for i in va.items])  # type: ignore[misc]


def test_separates_toy_sources_and_rejects_an_unseen_one(toy_sources: Path) -> None:
    model = _fit(toy_sources, ["alpha", "beta"])
    rng = np.random.default_rng(99)
    alpha = model.attribute_arrays([textured(rng, 36, 40, 2) for _ in range(20)])
    assert np.mean([r.candidate == "alpha" for r in alpha]) >= 0.9
    # an unseen source (period 5) is mostly called unknown
    gamma = model.attribute_arrays([textured(rng, 36, 40, 5) for _ in range(20)])
    assert np.mean([r.is_unknown for r in gamma]) >= 0.5


def test_thresholds_come_from_validation_images_only(toy_sources: Path) -> None:
    ds = with_split(load_dataset(toy_sources), (0.5, 0.5, 0.0), seed=0)
    tr, va = ds.select("train"), ds.select("val")
    tr_imgs, _, _ = load_items([i.path for i in tr.items])
    va_imgs, _, _ = load_items([i.path for i in va.items])
    tr_lab = [i.source for i in tr.items]
    va_lab = [i.source for i in va.items]
    a = BaselineAttributor().fit(tr_imgs, tr_lab, va_imgs, va_lab)  # type: ignore[arg-type]
    b = BaselineAttributor().fit(tr_imgs, tr_lab, va_imgs[::3], va_lab[::3])  # type: ignore[arg-type]
    np.testing.assert_array_equal(a.centroids_, b.centroids_)  # same training data
    assert not np.allclose(a.thresholds_, b.thresholds_)  # thresholds follow validation data
    # each threshold is the shared finite-sample rule on that source's validation scores
    scores = a._scores(a.features(va_imgs))
    for k, c in enumerate(a.classes_):
        own = scores[np.array(va_lab) == c, k]
        assert a.thresholds_[k] == score_threshold(own, 0.95)
        assert np.mean(own >= a.thresholds_[k]) >= 0.9


def test_a_source_without_validation_images_is_an_error(toy_sources: Path) -> None:
    imgs = [textured(np.random.default_rng(i), 32, 32, 2) for i in range(4)]
    with pytest.raises(ValueError, match="validation"):
        BaselineAttributor().fit(imgs, ["a", "a", "b", "b"], imgs[:1], ["a"])


def test_save_load_round_trip_gives_identical_predictions(toy_sources: Path, tmp_path: Path) -> None:
    model = _fit(toy_sources)
    model.save(tmp_path / "model")
    loaded = genprint.load(tmp_path / "model")
    imgs = [textured(np.random.default_rng(i), 64, 70, 3) for i in range(5)]
    a, b = model.attribute_arrays(imgs), loaded.attribute_arrays(imgs)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    assert a[0].n_tiles == 4  # 64×70 holds 2×2 tiles of 32


def test_unfitted_model_says_so() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        BaselineAttributor().attribute_arrays([np.zeros((32, 32, 3), np.uint8)])


def test_batch_with_bad_files_reports_each_and_keeps_the_good(toy_sources: Path, tmp_path: Path) -> None:
    model = _fit(toy_sources)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    small = tmp_path / "small.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(small)
    good = sorted((toy_sources / "beta").glob("*.png"))[:3]
    paths = [good[0], tmp_path / "empty.png", good[1], tmp_path / "text.png", small,
             tmp_path / "missing.png", good[2]]
    results = model.attribute(paths, batch_size=2)
    assert [r.path for r in results] == [str(p) for p in paths]
    codes = [r.error_code for r in results]
    assert codes == [None, "empty", None, "not_an_image", "too_small", "not_found", None]
    assert all(r.label is not None and r.scores for r in results if r.ok)
    # row by row: the same rows in the same order when a batch also ends at a pixel budget
    # (here after every image), and a row comes out as soon as it and those before it are done
    from genprint.methods import base

    original = base.BATCH_PIXELS
    base.BATCH_PIXELS = 1
    try:
        rows = model.iter_attribute(paths, batch_size=64)
        assert next(rows).path == str(paths[0])
        assert next(rows).error_code == "empty"
        again = list(rows)
    finally:
        base.BATCH_PIXELS = original
    assert [r.path for r in again] == [str(p) for p in paths[2:]]
    assert [(r.label, r.score) for r in again] == [(r.label, r.score) for r in results[2:]]


def test_attribute_takes_one_path_or_a_folder_as_the_cli_does(toy_sources: Path) -> None:
    model = _fit(toy_sources)
    one = min((toy_sources / "beta").glob("*.png"))
    for given in (one, str(one)):
        results = model.attribute(given)
        assert [r.path for r in results] == [str(one)] and results[0].ok
    folder = model.attribute(toy_sources / "gamma")
    assert [r.path for r in folder] == [str(p) for p in sorted((toy_sources / "gamma").glob("*.png"))]
    assert all(r.ok for r in folder)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.update(thresholds="x"), "usable baseline model"),
    (lambda c: c.update(thresholds=c["thresholds"][:-1]), "threshold"),
    (lambda c: c["thresholds"].__setitem__(0, float("nan")), "finite"),
    (lambda c: c["classes"].__setitem__(1, c["classes"][0]), "distinct"),
    (lambda c: c["params"].update(patch_size=0), "positive whole number"),
    (lambda c: c["params"].update(max_tiles="x"), "usable baseline model|positive whole"),
    (lambda c: c["params"].update(patch_size=16), "does not match"),
])
def test_a_hand_edited_card_is_refused_on_load(toy_sources: Path, tmp_path: Path, edit,
                                               message: str) -> None:
    import json

    from genprint.storage.model_dir import ModelFormatError

    out = _fit(toy_sources).save(tmp_path / "m")
    card = json.loads((out / "card.json").read_text())
    edit(card)
    rewrite_card(out / "card.json", card)  # NaN is written as the JSON extension NaN
    with pytest.raises(ModelFormatError, match=message):
        genprint.load(out)


def test_a_nan_score_is_an_error_row_not_an_answer(toy_sources: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN < threshold is False: a NaN score used to be accepted as a known source."""
    model = _fit(toy_sources, ["alpha", "beta"])
    rng = np.random.default_rng(5)
    images = [textured(rng, 36, 40, 2) for _ in range(3)]
    real_predict = model.predict_arrays

    def predict(batch):  # type: ignore[no-untyped-def]
        out = real_predict(batch)
        out[1].scores = np.array([np.nan, *out[1].scores[1:]])
        return out

    monkeypatch.setattr(model, "predict_arrays", predict)
    rows = model.attribute_arrays(images)
    assert rows[1].error_code == "no_score" and "alpha" in rows[1].error and rows[1].label is None
    assert rows[0].ok and rows[2].ok
