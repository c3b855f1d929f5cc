"""Residual statistics joined to the `metric` embedding (``residual_weight``)."""

from __future__ import annotations

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
    model_e = _copy(model)
    model_e.enroll(new, "newcomer")
    assert model_e.references_.shape[1] == dim
    np.testing.assert_array_equal(model_e.references_[: len(before)], before)


def _copy(model: MetricAttributor) -> MetricAttributor:
    import copy

    return copy.deepcopy(model)


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
    with pytest.raises(ModelFormatError):
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
