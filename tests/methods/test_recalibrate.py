"""Recalibrating a trained model's thresholds: the training rule again, on given images."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import genprint
from genprint.evaluation.perturb import perturbation
from genprint.methods.baseline import BaselineAttributor
from genprint.methods.metric import MetricAttributor
from genprint.methods.recalibrate import own_scores, recalibrate
from tests.conftest import textured

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy(n: int, seed: int, size: int = 48) -> tuple[list[np.ndarray], list[str]]:
    """``n`` images of each of three toy sources (traces of period 2, 3 and 5)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for period in (2, 3, 5):
        for _ in range(n):
            images.append(textured(rng, size, size, period))
            labels.append(f"p{period}")
    return images, labels


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[list[np.ndarray], list[str]]]:
    return {"train": toy(16, 0), "val": toy(12, 1)}


@pytest.fixture(scope="module")
def models(data: dict) -> dict[str, object]:
    baseline = BaselineAttributor(patch_size=16).fit(*data["train"], *data["val"])
    metric = MetricAttributor(width=4, embedding_dim=16, batch_size=16, epochs=3,
                              refs_per_class=1).fit(*data["train"], *data["val"])
    return {"baseline": baseline, "metric": metric}


@pytest.mark.parametrize("method", ["baseline", "metric"])
def test_the_training_images_give_the_training_thresholds(models: dict, data: dict,
                                                          method: str) -> None:
    """Recalibrating on the very validation images of the fit, unprocessed, is the training
    rule again: the same thresholds."""
    model = copy.deepcopy(models[method])
    before = np.array(model.thresholds_, dtype=np.float64)
    record = recalibrate(model, *data["val"], ["none"])
    np.testing.assert_allclose(model.thresholds_, before, rtol=0, atol=1e-6)
    assert record["conditions"] == ["none"] and record["target_accept"] == 0.95
    assert {s: v["n_images"] for s, v in record["sources"].items()} == {"p2": 12, "p3": 12,
                                                                        "p5": 12}


def test_processed_images_move_the_thresholds_by_the_same_rule(models: dict, data: dict,
                                                                tmp_path: Path) -> None:
    model = copy.deepcopy(models["metric"])
    before = np.array(model.thresholds_, dtype=np.float64)
    blur = perturbation("blur1")
    images, labels = data["val"]
    blurred = [blur(img, k) for k, img in enumerate(images)]
    record = recalibrate(model, [*images, *blurred], [*labels, *labels], ["none", "blur1"])
    scores = own_scores(models["metric"], [*images, *blurred], [*labels, *labels])
    for k, name in enumerate(model.classes_):  # the rule's rank ⌈25 · 0.95⌉ = 24: the worst of 24
        assert len(scores[name]) == 24
        assert model.thresholds_[k] == pytest.approx(min(scores[name]))
        assert np.mean(np.array(scores[name]) >= model.thresholds_[k]) >= 0.95
    assert (model.thresholds_ <= before + 1e-12).all() and (model.thresholds_ < before).any()
    assert model.model_sha256_ is None
    model.save(tmp_path / "m")
    again = genprint.load(tmp_path / "m")
    np.testing.assert_array_equal(again.thresholds_, model.thresholds_)
    assert again.training_info_["recalibrated"][-1]["conditions"] == ["none", "blur1"]
    assert record["sources"]["p2"]["before"] == pytest.approx(before[model.classes_.index("p2")])


def test_sources_without_images_keep_their_threshold_and_bad_uses_are_refused(
        models: dict, data: dict) -> None:
    model = copy.deepcopy(models["baseline"])
    before = np.array(model.thresholds_, dtype=np.float64)
    images, labels = data["val"]
    only = [i for i, lab in enumerate(labels) if lab == "p3"]
    record = recalibrate(model, [images[i] for i in only], ["p3"] * len(only), ["none"],
                         min_images=5)
    assert not record["sources"]["p2"]["recalibrated"]
    assert model.thresholds_[model.classes_.index("p2")] == before[model.classes_.index("p2")]
    with pytest.raises(ValueError, match="has at least 5 score"):
        recalibrate(model, images[:3], ["p2"] * 3, ["none"], min_images=5)
    with pytest.raises(ValueError, match="labels"):
        recalibrate(model, images[:3], ["p2"] * 2, ["none"])

    class Verifier(BaselineAttributor):
        thresholds_from_validation = False
        method = "invert"

    with pytest.raises(ValueError, match="nothing to recalibrate"):
        recalibrate(Verifier(), images, labels, ["none"])


def test_enrolled_sources_keep_their_threshold(models: dict, data: dict) -> None:
    model = copy.deepcopy(models["metric"])
    rng = np.random.default_rng(3)
    model.enroll([textured(rng, 48, 48, 7) for _ in range(6)], "p7")
    before = np.array(model.thresholds_, dtype=np.float64)
    extra = [textured(rng, 48, 48, 7) for _ in range(8)]
    images, labels = data["val"]
    record = recalibrate(model, [*images, *extra], [*labels, *["p7"] * 8], ["none"])
    assert record["sources"]["p7"]["recalibrated"] is False
    assert "enrolled" in record["sources"]["p7"]["kept_because"]
    assert model.thresholds_[-1] == before[-1]
    assert "recalibrated under none" in model.training_info_["threshold_rule"]
    again = recalibrate(model, images, labels, ["none"])  # twice: one mention in the rule
    assert model.training_info_["threshold_rule"].count("recalibrated under") == 1
    assert len(model.training_info_["recalibrated"]) == 2 and again["sources"]["p2"]["recalibrated"]


def test_another_acceptance_share_becomes_the_models(models: dict, data: dict,
                                                     tmp_path: Path) -> None:
    model = copy.deepcopy(models["baseline"])
    images, labels = data["val"]
    record = recalibrate(model, images, labels, ["none"], target_accept=0.75)
    scores = own_scores(models["baseline"], images, labels)
    for k, name in enumerate(model.classes_):  # rank ⌈13 · 0.75⌉ = 10 of 12, best first
        assert model.thresholds_[k] == pytest.approx(sorted(scores[name], reverse=True)[9])
    assert record["target_accept"] == 0.75 and model.target_accept == 0.75
    model.save(tmp_path / "m")
    assert genprint.load(tmp_path / "m").target_accept == 0.75
    with pytest.raises(ValueError, match="target_accept"):
        recalibrate(model, images, labels, ["none"], target_accept=1.5)
