"""Residual statistics joined to the `metric` embedding (``residual_weight``)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import genprint
from genprint.methods import metric_residual as residual
from genprint.methods.metric import MetricAttributor
from genprint.storage.model_dir import ModelFormatError
from tests.conftest import rewrite_card
from tests.methods.test_metric import TINY, toy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_statistics_have_their_length_and_ignore_a_brightness_offset() -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(20, 200, (5, 32, 32, 3), dtype=np.uint8)
    stats = residual.residual_statistics(tiles)
    assert stats.shape == (5, residual.N_FEATURES) and np.all(np.isfinite(stats))
    # the residual removes what is constant: the statistics do not see a brightness offset
    np.testing.assert_allclose(residual.residual_statistics(tiles + 30), stats, atol=1e-9)
    # one tile's numbers do not depend on the others in the batch
    np.testing.assert_allclose(residual.residual_statistics(tiles[2:3])[0], stats[2], atol=1e-12)


def _interpolated_from_one_phase(rng: np.random.Generator, n: int) -> np.ndarray:
    """Tiles whose pixels are sampled at one phase of the 2×2 grid and bilinearly interpolated
    elsewhere (the trace of a colour filter array, or of 2× bilinear upsampling)."""
    out = []
    for _ in range(n):
        x = np.zeros((32, 32, 3))
        x[::2, ::2] = rng.uniform(0, 255, (16, 16, 3))
        right, down = np.roll(x, -2, axis=1), np.roll(x, -2, axis=0)
        x[::2, 1::2] = ((x + right) / 2)[::2, ::2]
        x[1::2, ::2] = ((x + down) / 2)[::2, ::2]
        x[1::2, 1::2] = ((x + right + down + np.roll(down, -2, axis=1)) / 4)[::2, ::2]
        out.append(x.round().astype(np.uint8))
    return np.stack(out)


def test_statistics_see_a_period_two_trace() -> None:
    """Interpolation from one pixel phase makes the four phases' residual energies unequal;
    white noise leaves them equal (the sorted phase features, indices 24–35)."""
    rng = np.random.default_rng(1)
    white = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    traced = _interpolated_from_one_phase(rng, 20)
    spread = lambda s: np.ptp(s[:, 24:36].reshape(-1, 3, 4), axis=2).mean()
    assert spread(residual.residual_statistics(traced)) > 10 * spread(
        residual.residual_statistics(white))


def test_bad_tiles_are_refused() -> None:
    with pytest.raises(ValueError, match="N×H×W×3"):
        residual.residual_statistics(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="8×8"):
        residual.residual_statistics(np.zeros((2, 6, 6, 3), np.uint8))
    assert residual.residual_statistics(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 60)


@pytest.fixture(scope="module")
def joined() -> tuple[MetricAttributor, list[np.ndarray], list[str]]:
    torch.set_num_threads(1)
    images, labels = toy(8, 0)
    model = MetricAttributor(**TINY, epochs=1, refs_per_class=2, residual_weight=1.0).fit(
        images, labels, *toy(6, 1))
    return model, images, labels


def test_the_joined_space_holds_references_samples_and_enrolment(joined) -> None:
    model, images, _ = joined
    dim = model.net_.embedding_dim + residual.N_FEATURES
    assert model.references_.shape[1] == dim and model.samples_.shape[1] == dim
    emb = model.embed(images[:4])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the statistics were standardised on the training tiles
    stats = residual.residual_statistics(np.stack(images))
    np.testing.assert_allclose(model.residual_mean_, stats.mean(axis=0))
    assert model.training_info_["residual_weight"] == 1.0
    new = toy(3, 9)[0][:3]
    before = model.references_.copy()
    model_e = copy.deepcopy(model)
    model_e.enroll(new, "newcomer")
    assert model_e.references_.shape[1] == dim
    np.testing.assert_array_equal(model_e.references_[: len(before)], before)


def test_the_network_part_is_the_plain_embedding() -> None:
    """Weight 0 is the embedding alone; with a weight, the joined vector's first part is the
    same network's embedding (the statistics change no training step), rescaled."""
    torch.set_num_threads(1)
    images, labels = toy(6, 2)
    plain = MetricAttributor(**TINY, epochs=1, refs_per_class=1, residual_weight=0).fit(
        images, labels, images, labels)
    joined = MetricAttributor(**TINY, epochs=1, refs_per_class=1).fit(
        images, labels, images, labels)
    assert joined.effective_residual_weight == 0.5
    assert plain.references_.shape[1] == plain.net_.embedding_dim
    head = joined.embed(images)[:, : plain.net_.embedding_dim]
    head /= np.linalg.norm(head, axis=1, keepdims=True)
    np.testing.assert_allclose(head, plain.embed(images), atol=1e-5)
    assert MetricAttributor(references="proxies").effective_residual_weight == 0.0


def test_save_load_round_trip_and_tampering(joined, tmp_path) -> None:
    model, images, _ = joined
    model.save(tmp_path / "m")
    loaded = genprint.load(tmp_path / "m")
    assert loaded.residual_weight == 1.0
    a, b = model.attribute_arrays(images), loaded.attribute_arrays(images)
    assert [r.label for r in a] == [r.label for r in b]
    np.testing.assert_allclose([r.score for r in a], [r.score for r in b], atol=1e-6)
    card_path = next((tmp_path / "m").glob("*.json"))
    card = json.loads(card_path.read_text())
    for bad in (-1.0, "heavy", True):
        card["params"]["residual_weight"] = bad
        rewrite_card(card_path, card)
        with pytest.raises(ModelFormatError, match="residual_weight"):
            genprint.load(tmp_path / "m")
    card["params"]["residual_weight"] = 0.0  # claims the plain embedding: sizes disagree
    rewrite_card(card_path, card)
    with pytest.raises(ModelFormatError, match="residual statistics of weight 0 has 16"):
        genprint.load(tmp_path / "m")


def test_bad_settings_are_refused() -> None:
    images, labels = toy(2, 0)
    for bad in (-0.5, float("nan"), True):
        with pytest.raises(ValueError, match="residual_weight"):
            MetricAttributor(**TINY, epochs=1, residual_weight=bad).fit(images, labels, images,
                                                                        labels)
    with pytest.raises(ValueError, match="k-means"):
        MetricAttributor(**TINY, epochs=1, residual_weight=1.0, references="proxies").fit(
            images, labels, images, labels)


def test_a_card_from_before_residual_statistics_loads_as_the_embedding_alone(tmp_path) -> None:
    torch.set_num_threads(1)
    images, labels = toy(4, 3)
    model = MetricAttributor(**TINY, epochs=1, refs_per_class=1, residual_weight=0).fit(
        images, labels, images, labels)
    model.save(tmp_path / "m")
    card_path = next((tmp_path / "m").glob("*.json"))
    card = json.loads(card_path.read_text())
    del card["params"]["residual_weight"]  # as older releases wrote it
    rewrite_card(card_path, card)
    loaded = genprint.load(tmp_path / "m")
    assert loaded.effective_residual_weight == 0.0
    np.testing.assert_allclose(loaded.embed(images), model.embed(images), atol=1e-6)


def test_flat_tiles_give_finite_statistics_and_carry_no_weight() -> None:
    """A constant, saturated or one-flat-channel tile has no residual to measure: finite
    numbers, and the joined part of an entirely flat tile is the training mean (0)."""
    rng = np.random.default_rng(3)
    textured_tile = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    constant = np.full((32, 32, 3), 90, np.uint8)
    saturated = np.full((32, 32, 3), 255, np.uint8)
    one_flat = textured_tile.copy()
    one_flat[..., 0] = 255
    ramp = np.broadcast_to(np.arange(32, dtype=np.uint8)[None, :, None] * 4, (32, 32, 3)).copy()
    batch = np.stack([textured_tile, constant, saturated, one_flat, ramp])
    stats = residual.residual_statistics(batch)
    assert np.all(np.isfinite(stats))
    assert residual.flat(stats).tolist() == [False, True, True, False, True]
    mean, std = residual.standardiser(residual.residual_statistics(
        rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)))
    emb = np.eye(5, 16, dtype=np.float32)
    joined = residual.join(emb, stats, mean, std, 0.5)
    np.testing.assert_array_equal(joined[[1, 2, 4], 16:], 0.0)
    # every standardised number is clipped: one odd tile cannot outweigh an image's others
    assert np.all(np.abs(joined[:, 16:]) <= 0.5 * residual.CLIP / np.sqrt(60) + 1e-6)


def test_an_image_with_a_flat_tile_is_scored_not_nan(joined) -> None:
    model, images, _ = joined
    img = np.concatenate([np.concatenate([images[0], images[1]], axis=1),
                          np.concatenate([images[2], np.full_like(images[0], 255)], axis=1)])
    result = model.attribute_arrays([img])[0]
    assert np.isfinite(result.score) and np.isfinite(model.embed([img])).all()
    # a flat image in the training data does not break the fit
    train, labels = toy(4, 4)
    train[0] = np.zeros_like(train[0])
    fitted = MetricAttributor(**TINY, epochs=1, refs_per_class=1).fit(train, labels, train,
                                                                      labels)
    assert np.all(np.isfinite(fitted.thresholds_)) and np.all(np.isfinite(fitted.residual_std_))


def test_statistics_do_not_depend_on_the_rest_of_the_call() -> None:
    """Fixed-size, padded chunks: a tile's numbers are the same bit for bit alone or in a crowd."""
    tiles = np.random.default_rng(5).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    crowd = residual.statistics_in_chunks(tiles)
    for k in (0, 17, 39):
        np.testing.assert_array_equal(residual.statistics_in_chunks(tiles[k : k + 1])[0], crowd[k])
    np.testing.assert_allclose(crowd, residual.residual_statistics(tiles), atol=1e-12)


def test_the_card_keeps_the_weight_used_and_refuses_odd_ones(tmp_path) -> None:
    torch.set_num_threads(1)
    images, labels = toy(3, 8)
    model = MetricAttributor(**TINY, epochs=1, refs_per_class=1).fit(images, labels, images,
                                                                     labels)
    assert model.residual_weight is None
    model.save(tmp_path / "m")
    card_path = next((tmp_path / "m").glob("*.json"))
    card = json.loads(card_path.read_text())
    assert card["params"]["residual_weight"] == 0.5  # not None: a later default cannot change it
    for bad, match in ((1e300, "residual_weight"), (10**400, "residual_weight"),
                       (None, None)):
        edited = json.loads(json.dumps(card))
        edited["params"]["residual_weight"] = bad
        edited["params"]["references"] = "proxies" if bad is None else "kmeans"
        rewrite_card(card_path, edited)
        with pytest.raises(ModelFormatError, match=match or "proxy|dimensions"):
            genprint.load(tmp_path / "m")


def test_the_stored_mean_and_std_are_checked(joined, tmp_path) -> None:
    from genprint.storage.model_dir import ModelContents

    model, _, _ = joined
    card, tensors, arrays = model._to_contents()
    for name, bad in (("residual_std", np.zeros(60)), ("residual_mean", np.full(60, np.nan)),
                      ("residual_mean", np.zeros(59))):
        broken = {**arrays, name: bad}
        contents = ModelContents(card={**card, "classes": model.classes_,
                                       "thresholds": model.thresholds_.tolist()},
                                 tensors=tensors,
                                 arrays=broken)
        with pytest.raises(ModelFormatError, match=name):
            MetricAttributor._from_contents(contents)


def test_the_cli_refuses_odd_weights(tmp_path) -> None:
    from typer.testing import CliRunner

    from genprint.cli.app import app

    for args in (["--residual-weight", "-1"], ["--residual-weight", "inf"],
                 ["--residual-weight", "0.5", "--references", "proxies"]):
        out = CliRunner().invoke(app, ["train", "metric", "--data", str(tmp_path), "--out",
                                       str(tmp_path / "m"), *args])
        assert out.exit_code == 2 and "--residual-weight" in out.output, out.output
