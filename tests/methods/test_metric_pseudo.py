"""Pseudo-sources of `metric`: deterministic re-synthesis, loss classes only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genprint.methods.metric import MetricAttributor
from genprint.methods.metric_pseudo import pseudo_source_images, refilter, resynthesise
from tests.methods.test_metric import TINY, toy


def test_resynthesis_keeps_content_and_differs_per_pseudo_source() -> None:
    flat = np.full((2, 32, 32, 3), 120, np.uint8)
    out = resynthesise(flat, seed=0, k=0)
    assert out.shape == flat.shape and out.dtype == np.uint8
    # unit DC gain: a flat image stays flat away from the border
    assert np.abs(out[:, 2:-2, 2:-2].astype(int) - 120).max() <= 1
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    a, b = resynthesise(images, 0, 0), resynthesise(images, 0, 1)
    np.testing.assert_array_equal(a, resynthesise(images, 0, 0))  # deterministic
    assert not np.array_equal(a, b) and not np.array_equal(a, resynthesise(images, 1, 0))
    with pytest.raises(ValueError, match="even sides"):
        resynthesise(images[:, :31], 0, 0)


def test_filter_pseudo_sources_keep_size_and_flat_areas_and_differ() -> None:
    flat = np.full((2, 31, 33, 3), 90, np.uint8)  # no resampling: any size works
    out = refilter(flat, seed=0, k=0)
    assert out.shape == flat.shape and np.abs(out.astype(int) - 90).max() <= 1
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    a = refilter(images, 0, 0)
    np.testing.assert_array_equal(a, refilter(images, 0, 0))
    assert not np.array_equal(a, refilter(images, 0, 1))
    made, labels = pseudo_source_images(list(images), 2, 3, seed=0, kind="filter")
    assert len(made) == 6 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="kind"):
        pseudo_source_images(list(images), 2, 3, seed=0, kind="warp")


def test_pseudo_source_images_are_drawn_from_the_training_images() -> None:
    images = [np.random.default_rng(i).integers(0, 256, (34, 36, 3), dtype=np.uint8)
              for i in range(5)]
    made, labels = pseudo_source_images(images, n_sources=3, per_source=4, seed=0)
    assert len(made) == 12 and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert all(m.shape == (34, 36, 3) for m in made)
    assert pseudo_source_images(images, 0, 4, 0)[0] == []


def test_pseudo_sources_are_loss_classes_only() -> None:
    torch.set_num_threads(1)
    images, labels = toy(4, 20)
    m = MetricAttributor(**TINY, epochs=1, refs_per_class=2, pseudo_sources=2).fit(
        images, labels, images, labels)
    assert m.training_info_["loss_classes"] == 3 + 2 and m.classes_ == ["noise", "p2", "p3"]
    assert np.bincount(m.reference_sources_).tolist() == [2, 2, 2]
    assert all(p.scores.shape == (3,) for p in m.predict_arrays(images))  # known sources only
    proxies = MetricAttributor(**TINY, epochs=1, references="proxies", pseudo_sources=2).fit(
        images, labels, images, labels)
    assert proxies.references_.shape == (3, 16)  # the pseudo-sources' proxies are dropped
    with pytest.raises(ValueError, match="pseudo_sources"):
        MetricAttributor(**TINY, pseudo_sources=-1).fit(images, labels, images, labels)
