"""``MetricAttributor(augment="jpeg")``: JPEG re-saves of a share of the training crops."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genprint
from genprint.methods import metric_train
from genprint.methods.metric import MetricAttributor
from genprint.methods.metric_train import jpeg_resave, patch_batches
from genprint.storage.model_dir import ModelFormatError
from tests.conftest import rewrite_card
from tests.methods.test_metric import TINY, toy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_jpeg_resave_is_a_jpeg_round_trip_of_the_same_size() -> None:
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = jpeg_resave(patch, 75)
    assert out.shape == patch.shape and out.dtype == np.uint8
    buf = io.BytesIO()
    Image.fromarray(patch).save(buf, format="JPEG", quality=75)
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    # a lower quality loses more of the noise
    err = [np.abs(jpeg_resave(patch, q).astype(int) - patch).mean() for q in (95, 60)]
    assert 0 < err[0] < err[1]
    # off the block grid: same size, other pixels (the blocks cut the patch elsewhere)
    shifted = jpeg_resave(patch, 75, (5, 11))
    assert shifted.shape == patch.shape and not np.array_equal(shifted, out)
    assert np.abs(shifted.astype(int) - patch).mean() < 2 * np.abs(out.astype(int) - patch).mean()
    with pytest.raises(ValueError, match="offset"):
        jpeg_resave(patch, 75, (16, 0))
    for bad in (patch.astype(np.float32), patch[..., :1], np.dstack([patch, patch[..., :1]])):
        with pytest.raises(ValueError, match="uint8"):
            jpeg_resave(bad, 75)


def test_about_half_the_crops_are_resaved_before_the_view_on_any_grid_phase(
        monkeypatch: pytest.MonkeyPatch) -> None:
    images, _ = toy(20, 0)
    y = np.zeros(len(images), dtype=np.int64)
    calls: list[tuple[np.ndarray, int, tuple[int, int]]] = []
    real = metric_train.jpeg_resave

    def spy(patch: np.ndarray, quality: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
        calls.append((patch.copy(), quality, offset))
        return real(patch, quality, offset)

    monkeypatch.setattr(metric_train, "jpeg_resave", spy)
    plain = next(patch_batches(images, y, 32, 60, np.random.default_rng(3)))[0]
    jpeg = next(patch_batches(images, y, 32, 60, np.random.default_rng(3), augment="jpeg"))[0]
    changed = (plain != jpeg).flatten(1).any(dim=1).numpy()
    # the crops are drawn before the augmentation: the unchanged ones are the same patches
    assert len(calls) == int(changed.sum())
    assert 0.3 < changed.mean() < 0.7
    lo, hi = metric_train.JPEG_QUALITIES
    qualities = [q for _, q, _ in calls]
    assert min(qualities) >= lo and max(qualities) <= hi and len(set(qualities)) > 5
    offsets = np.array([o for _, _, o in calls])
    assert offsets.min() >= 0 and offsets.max() < metric_train.JPEG_GRID
    assert len({tuple(o) for o in offsets}) > 5
    # with symmetries, the crop is compressed first and the view taken after: what reaches
    # the JPEG re-save is an unturned crop
    crops = {np.asarray(p.permute(1, 2, 0) * 255).round().astype(np.uint8).tobytes()
             for p in plain}
    calls.clear()
    next(patch_batches(images, y, 32, 60, np.random.default_rng(3), symmetries="dihedral",
                       augment="jpeg"))
    assert calls and all(p.tobytes() in crops for p, _, _ in calls)
    with pytest.raises(ValueError, match="augment"):
        next(patch_batches(images, y, 32, 60, np.random.default_rng(3), augment="blur"))


def test_the_augmentation_reaches_training(
        monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = toy(4, 2)
    calls = []
    real = metric_train.jpeg_resave
    monkeypatch.setattr(metric_train, "jpeg_resave",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    MetricAttributor(**TINY, epochs=1, refs_per_class=1).fit(images, labels, images, labels)
    assert not calls
    MetricAttributor(**TINY, epochs=1, refs_per_class=1, augment="jpeg").fit(
        images, labels, images, labels)
    assert len(calls) > 0


def test_the_augmentation_is_saved_checked_and_absent_in_old_cards(tmp_path: Path) -> None:
    images, labels = toy(6, 1)
    with pytest.raises(ValueError, match="augment"):
        MetricAttributor(**TINY, epochs=1, augment="jpg").fit(images, labels, images, labels)
    model = MetricAttributor(**TINY, epochs=1, refs_per_class=1, augment="jpeg").fit(
        images, labels, images, labels)
    assert model.training_info_["augment"] == "jpeg"
    model.save(tmp_path / "m")
    loaded = genprint.load(tmp_path / "m")
    assert loaded.augment == "jpeg"
    a, b = model.attribute_arrays(images), loaded.attribute_arrays(images)
    assert [r.label for r in a] == [r.label for r in b]
    card_path = next((tmp_path / "m").glob("*.json"))
    card = json.loads(card_path.read_text())
    del card["params"]["augment"]  # as releases before the option wrote it
    rewrite_card(card_path, card)
    assert genprint.load(tmp_path / "m").augment == "none"
    card["params"]["augment"] = "mixup"
    rewrite_card(card_path, card)
    with pytest.raises(ModelFormatError, match="augment"):
        genprint.load(tmp_path / "m")


def test_the_cli_refuses_an_unknown_augmentation_before_creating_anything(
        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from genprint.cli.app import app

    out = CliRunner().invoke(app, ["train", "metric", "--data", str(tmp_path), "--out",
                                   str(tmp_path / "new" / "m"), "--augment", "blur"])
    assert out.exit_code == 2 and "--augment" in out.output, out.output
    assert not (tmp_path / "new").exists()
