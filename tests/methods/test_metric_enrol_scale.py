"""The enrolment threshold's scaled-mean rule: a factor simulated on the trained sources'
validation samples, times the mean leave-one-image-out distance of the enrolled images."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import genprint
from genprint.methods import metric_refs as refs
from genprint.methods.metric import MetricAttributor
from genprint.storage.model_dir import ModelFormatError
from tests.conftest import textured
from tests.methods.test_metric import TINY, toy
from tests.methods.test_metric_separator import _refresh_checksums

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K = 10
"""Reference points per source: with 10 or fewer images, every image is one (no k-means fits,
which keeps these tests fast; the k-means path is the same code, tested in test_metric.py)."""


def cluster(rng: np.random.Generator, n: int, dim: int, spread: float) -> np.ndarray:
    """``n`` unit vectors scattered around a random direction (one simulated source)."""
    centre = rng.normal(size=dim)
    centre /= np.linalg.norm(centre)
    return refs.normalise(centre + spread * rng.normal(size=(n, dim)) / np.sqrt(dim))


def draws_of(emb: np.ndarray, n: int, scale: float | None, rng: np.random.Generator,
             draws: int) -> np.ndarray:
    """Share of each source's other images within the threshold of ``draws`` enrolments of
    ``n`` of its images (the rule alone; ``scale`` None: the quantile rule)."""
    out = []
    for _ in range(draws):
        pick = rng.permutation(len(emb))
        t, d = refs.enrolled_distances(emb[pick[:n]], emb[pick[n:]], K, 0, 0.95, np.ones(1),
                                       scale)
        out.append(np.mean(d <= t))
    return np.array(out)


def test_the_scale_gives_new_sources_of_the_same_kind_the_target_acceptance() -> None:
    """Sources that differ in spread only: a factor simulated on some of them accepts 95% of
    an unseen one's images on average, and reaches 90% in more draws than the largest of 10
    leave-one-out distances, whose acceptance is ≈ 10/11 on average."""
    rng = np.random.default_rng(0)
    spreads = (0.2, 0.35, 0.5, 0.3)
    known = [cluster(rng, 60, 16, s) for s in spreads]
    emb, labels = np.concatenate(known), np.repeat(np.arange(len(known)), 60)
    scale, n_draws = refs.enrolment_scale(emb, labels, 10, K, 0, 0.95)
    assert scale is not None and scale > 1.0 and n_draws == 4 * refs.SCALE_DRAWS
    assert refs.enrolment_scale(emb, labels, 10, K, 0, 0.95) == (scale, n_draws)  # seeded
    new = cluster(rng, 400, 16, 0.42)  # a spread no known source has
    scaled = draws_of(new, 10, scale, np.random.default_rng(1), 60)
    quantile = draws_of(new, 10, None, np.random.default_rng(1), 60)
    assert abs(scaled.mean() - 0.95) < 0.03
    assert quantile.mean() < scaled.mean() - 0.02
    assert np.mean(scaled >= 0.9) > np.mean(quantile >= 0.9) + 0.1


def test_the_scale_needs_enough_images_beyond_the_enrolled_ones() -> None:
    rng = np.random.default_rng(2)
    emb = np.concatenate([cluster(rng, 19, 16, 0.3), cluster(rng, 25, 16, 0.3)])
    labels = np.repeat([0, 1], [19, 25])
    assert refs.enrolment_scale(emb, labels, 16, K, 0, 0.95)[1] == refs.SCALE_DRAWS  # source 1
    assert refs.enrolment_scale(emb, labels, 21, K, 0, 0.95) == (None, 0)
    assert refs.enrolment_scale(emb, labels, 2, K, 0, 0.95) == (None, 0)  # no leave-one-out


@pytest.fixture(scope="module")
def model() -> MetricAttributor:
    torch.set_num_threads(1)
    train, val = toy(20, 0), toy(24, 1)  # 24 validation images: 10 enrolled + 14 measured
    return MetricAttributor(**TINY, epochs=4, refs_per_class=K).fit(*train, *val)


def new_source(n: int, seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [textured(rng, 32, 32, 5) for _ in range(n)]


def test_a_model_marks_its_validation_samples(model: MetricAttributor) -> None:
    assert model.sample_validation_.sum() == 3 * 24
    assert len(model.sample_validation_) == len(model.samples_) == 3 * 44
    np.testing.assert_allclose(model.samples_[model.sample_validation_],
                               model.embed(toy(24, 1)[0]), atol=1e-6)


def test_enrolment_uses_the_scaled_mean_and_records_its_factor(model: MetricAttributor) -> None:
    m = copy.deepcopy(model)
    images = new_source(10)
    record = m.enroll(images, "p5")
    flags = model.sample_validation_
    scale, draws = refs.enrolment_scale(model.samples_[flags], model.sample_sources_[flags], 10,
                                        K, model.seed, model.target_accept)
    assert record["threshold_rule"] == "leave-one-image-out, scaled mean"
    assert record["threshold_scale"] == pytest.approx(scale)
    assert record["threshold_scale_draws"] == draws == 3 * refs.SCALE_DRAWS
    emb = m.embed(images)
    held = refs.leave_one_image_out(emb, np.arange(10), emb, K, m.seed)
    assert -record["threshold"] == pytest.approx(scale * held.mean(), rel=1e-5)
    # the benchmarks' simulated enrolments give the same threshold
    t, _ = refs.enrolled_distances(emb, emb[:1], K, m.seed, m.target_accept, np.ones(1), scale)
    assert t == pytest.approx(-record["threshold"], rel=1e-5)
    # the enrolled images are samples, not validation samples: a later enrolment's factor is
    # simulated on the trained sources' validation images alone
    assert m.sample_validation_.sum() == flags.sum()
    later = m.enroll(new_source(10, seed=6), "p5b")
    assert later["threshold_scale"] == pytest.approx(scale)


def test_too_few_validation_samples_keep_the_quantile_rule(model: MetricAttributor) -> None:
    record = copy.deepcopy(model).enroll(new_source(20), "p5")  # 24 validation images < 20 + 5
    assert record["threshold_rule"] == "leave-one-image-out"
    assert record["threshold_scale"] is None
    assert "validation samples to simulate" in record["threshold_scale_note"]


def test_sample_validation_survives_save_and_load(model: MetricAttributor,
                                                  tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    loaded = genprint.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.sample_validation_, model.sample_validation_)
    images = new_source(10)
    a, b = copy.deepcopy(model).enroll(images, "p5"), loaded.enroll(images, "p5")
    assert a["threshold"] == b["threshold"] and a["threshold_scale"] == b["threshold_scale"]


def test_an_older_model_without_the_flags_keeps_the_quantile_rule(model: MetricAttributor,
                                                                   tmp_path: Path) -> None:
    model.save(tmp_path / "old")
    (tmp_path / "old" / "sample_validation.npy").unlink()
    _refresh_checksums(tmp_path / "old")
    old = genprint.load(tmp_path / "old")
    assert old.sample_validation_ is None
    record = old.enroll(new_source(10), "p5")
    assert record["threshold_rule"] == "leave-one-image-out"
    assert "older genprint" in record["threshold_scale_note"]


def test_malformed_flags_are_refused_on_load(model: MetricAttributor, tmp_path: Path) -> None:
    model.save(tmp_path / "bad")
    np.save(tmp_path / "bad" / "sample_validation.npy", np.full(3, 2, dtype=np.uint8))
    _refresh_checksums(tmp_path / "bad")
    with pytest.raises(ModelFormatError, match="sample_validation"):
        genprint.load(tmp_path / "bad")
    card = json.loads((tmp_path / "bad" / "card.json").read_text())
    assert "sample_validation.npy" in card["files"]


def test_genprint_enroll_says_which_rule_set_the_threshold(model: MetricAttributor,
                                                            tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from genprint.cli.app import app

    model.save(tmp_path / "m")
    files = []
    for i, img in enumerate(new_source(10)):
        files.append(tmp_path / f"{i:02d}.png")
        Image.fromarray(img).save(files[-1])
    out = CliRunner().invoke(app, ["enroll", str(tmp_path / "m"), "--source", "p5",
                                   *map(str, files)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "threshold = " in text and "× the mean distance of each enrolment image" in text
    assert "60 simulated enrolments of 10 validation images" in text
    more = []
    for i, img in enumerate(new_source(20, seed=7)):
        more.append(tmp_path / f"more{i:02d}.png")
        Image.fromarray(img).save(more[-1])
    out = CliRunner().invoke(app, ["enroll", str(tmp_path / "m"), "--source", "p6",
                                   *map(str, more)])
    assert out.exit_code == 0, out.output  # 20 images: too few validation samples to simulate
    text = " ".join(out.output.split())
    assert "not their scaled mean: no trained source has 25 validation samples" in text
    out = CliRunner().invoke(app, ["enroll", str(tmp_path / "m"), "--source", "p7", "--json",
                                   "--threshold-rule", "quantile", "--out", str(tmp_path / "q"),
                                   *map(str, files)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["threshold_rule"] == "leave-one-image-out"
    out = CliRunner().invoke(app, ["enroll", str(tmp_path / "m"), "--source", "p8",
                                   "--threshold-rule", "widest", *map(str, files)])
    assert out.exit_code == 2 and "--threshold-rule" in out.output


def test_the_quantile_rule_can_still_be_asked_for(model: MetricAttributor) -> None:
    images = new_source(10)
    record = copy.deepcopy(model).enroll(images, "p5", threshold_rule="quantile")
    emb = model.embed(images)
    held = refs.leave_one_image_out(emb, np.arange(10), emb, K, model.seed)
    assert record["threshold_rule"] == "leave-one-image-out"
    assert -record["threshold"] == pytest.approx(held.max(), rel=1e-5)  # 10 images: the largest
    assert record["threshold_scale"] is None and "asked for" in record["threshold_scale_note"]
    with pytest.raises(ValueError, match="threshold rule"):
        copy.deepcopy(model).enroll(images, "p5", threshold_rule="widest")
