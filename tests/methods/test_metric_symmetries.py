"""Symmetries of `metric`: pixel-exact views in training, an invariant mean at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genprint.methods.metric import MetricAttributor
from genprint.methods.metric_train import patch_batches, symmetry_view, symmetry_views
from tests.conftest import rewrite_card
from tests.methods.test_metric import TINY, toy


def test_views_permute_pixels_and_are_distinct() -> None:
    patch = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    views = [symmetry_view(patch, k) for k in range(8)]
    for v in views:  # a permutation of the pixels: same multiset of values, nothing interpolated
        assert v.shape == patch.shape and v.dtype == patch.dtype
        np.testing.assert_array_equal(np.sort(v.reshape(-1, 3), axis=0),
                                      np.sort(patch.reshape(-1, 3), axis=0))
    assert len({v.tobytes() for v in views}) == 8
    np.testing.assert_array_equal(views[0], patch)
    np.testing.assert_array_equal(views[4], patch[:, ::-1])
    np.testing.assert_array_equal(views[6], patch[::-1])  # half turn + left-right = up-down


@pytest.mark.parametrize("name", ["flips", "dihedral"])
def test_each_set_is_closed_under_its_own_views(name: str) -> None:
    """Every view of a view is again a view of the set: the mean over a set is invariant."""
    patch = np.random.default_rng(1).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    ks = symmetry_views(name)
    own = {symmetry_view(patch, k).tobytes() for k in ks}
    for a in ks:
        assert {symmetry_view(symmetry_view(patch, a), b).tobytes() for b in ks} == own


def test_unknown_set_is_refused() -> None:
    with pytest.raises(ValueError, match="symmetries"):
        symmetry_views("rotate-45")
    images, labels = toy(2, 0)
    with pytest.raises(ValueError, match="symmetries"):
        MetricAttributor(**TINY, epochs=1, symmetries="any").fit(images, labels, images, labels)


def test_training_batches_show_views_of_the_crops() -> None:
    images = [np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
              for i in range(6)]
    labels = np.arange(6)
    plain = list(patch_batches(images, labels, 8, 6, np.random.default_rng(0)))
    seen = list(patch_batches(images, labels, 8, 6, np.random.default_rng(0),
                              symmetries="dihedral"))
    (x0, y0), (x1, y1) = plain[0], seen[0]
    assert torch.equal(y0, y1)  # same order: only the views differ
    assert not torch.equal(x0, x1)
    for a, b in zip(x0, x1, strict=True):  # each patch is one of its own eight views
        views = [torch.from_numpy(symmetry_view(a.permute(1, 2, 0).numpy(), k).copy())
                 for k in range(8)]
        assert any(torch.equal(v.permute(2, 0, 1), b) for v in views)


def test_embeddings_with_symmetries_are_invariant_to_the_views() -> None:
    torch.set_num_threads(1)
    images, labels = toy(4, 3)
    m = MetricAttributor(**TINY, epochs=1, refs_per_class=1, symmetries="flips").fit(
        images, labels, images, labels)
    img = toy(1, 5, size=64)[0][0]  # four tiles, each averaged over its views
    base = m.embed([img])[0]
    for k in symmetry_views("flips")[1:]:
        np.testing.assert_allclose(m.embed([symmetry_view(img, k)])[0], base, atol=1e-5)
    assert m.get_params()["symmetries"] == "flips"
    plain = MetricAttributor(**TINY, epochs=1, refs_per_class=1).fit(
        images, labels, images, labels)
    assert not np.allclose(plain.embed([img[::-1]])[0], plain.embed([img])[0], atol=1e-3)


def test_symmetries_survive_save_and_load_and_a_bad_value_is_refused(tmp_path) -> None:
    import json

    import genprint
    from genprint.storage.model_dir import ModelFormatError

    torch.set_num_threads(1)
    images, labels = toy(3, 6)
    m = MetricAttributor(**TINY, epochs=1, refs_per_class=1, symmetries="dihedral").fit(
        images, labels, images, labels)
    m.save(tmp_path / "m")
    loaded = genprint.load(tmp_path / "m")
    assert loaded.symmetries == "dihedral"
    np.testing.assert_allclose(loaded.embed(images[:3]), m.embed(images[:3]), atol=1e-6)
    card_path = next((tmp_path / "m").glob("*.json"))
    card = json.loads(card_path.read_text())
    card["params"]["symmetries"] = "rotate-45"
    rewrite_card(card_path, card)
    with pytest.raises(ModelFormatError, match="symmetries"):
        genprint.load(tmp_path / "m")
