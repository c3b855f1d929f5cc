"""``MetricAttributor(real_gen_weight=...)``: a real-vs-generated head during training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import genprint
from genprint.backbones.forensic_cnn import ForensicCNN, ForensicCNNConfig
from genprint.methods.metric import MetricAttributor
from genprint.methods.metric_train import train_metric
from tests.methods.test_metric import TINY, toy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def with_real(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """The toy sources, the noisy one named ``real``."""
    images, labels = toy(n, seed)
    return images, ["real" if lab == "noise" else lab for lab in labels]


def test_the_head_changes_training_only_where_a_real_source_exists() -> None:
    images, labels = with_real(6, 0)
    plain = MetricAttributor(**TINY, epochs=2, refs_per_class=1).fit(
        images, labels, images, labels)
    headed = MetricAttributor(**TINY, epochs=2, refs_per_class=1, real_gen_weight=1.0).fit(
        images, labels, images, labels)
    assert plain.training_info_["real_gen_weight"] == 0.0
    assert headed.training_info_["real_gen_weight"] == 1.0
    assert headed.training_info_["loss_history"] != plain.training_info_["loss_history"]
    # no source named real: nothing to learn against, the fit is the plain one
    images, labels = toy(6, 0)
    a = MetricAttributor(**TINY, epochs=2, refs_per_class=1).fit(images, labels, images, labels)
    b = MetricAttributor(**TINY, epochs=2, refs_per_class=1, real_gen_weight=1.0).fit(
        images, labels, images, labels)
    assert b.training_info_["real_gen_weight"] == 0.0
    np.testing.assert_array_equal(a.embed(images), b.embed(images))


def test_the_head_needs_one_flag_per_class() -> None:
    images, _ = toy(2, 1)
    net = ForensicCNN(ForensicCNNConfig(embedding_dim=16, width=4))
    with pytest.raises(ValueError, match="one generated/real flag per class"):
        train_metric(net, images, np.zeros(len(images), dtype=np.int64), 3, loss="proxy-anchor",
                     epochs=1, batch_size=4, lr=1e-3, weight_decay=0.0, proxy_lr_mult=1.0,
                     crops_per_image=1, seed=0, generated=np.array([True, False]),
                     real_gen_weight=1.0)


def test_bad_weights_are_refused_and_the_weight_is_saved(tmp_path: Path) -> None:
    images, labels = with_real(2, 2)
    for bad in (-1.0, 101.0, True, "strong", float("nan")):
        with pytest.raises(ValueError, match="real_gen_weight"):
            MetricAttributor(**TINY, epochs=1, real_gen_weight=bad).fit(
                images, labels, images, labels)
    torch.manual_seed(0)
    model = MetricAttributor(**TINY, epochs=1, refs_per_class=1, real_gen_weight=0.5).fit(
        images, labels, images, labels)
    model.save(tmp_path / "m")
    loaded = genprint.load(tmp_path / "m")
    assert loaded.real_gen_weight == 0.5
    np.testing.assert_allclose(loaded.embed(images), model.embed(images), atol=1e-6)
