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
from tests.conftest import rewrite_card, textured
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
    scale, n_draws, _ = refs.enrolment_scale(emb, labels, 10, K, 0, 0.95)
    assert scale is not None and scale > 1.0 and n_draws == 4 * refs.SCALE_DRAWS
    assert refs.enrolment_scale(emb, labels, 10, K, 0, 0.95)[:2] == (scale, n_draws)  # seeded
    new = cluster(rng, 400, 16, 0.42)  # a spread no known source has
    scaled = draws_of(new, 10, scale, np.random.default_rng(1), 60)
    quantile = draws_of(new, 10, None, np.random.default_rng(1), 60)
    assert abs(scaled.mean() - 0.95) < 0.03
    assert quantile.mean() < scaled.mean() - 0.02
    assert np.mean(scaled >= 0.9) > np.mean(quantile >= 0.9) + 0.1


def test_the_scale_needs_enough_images_beyond_the_enrolled_ones() -> None:
    rng = np.random.default_rng(2)
    emb = np.concatenate([cluster(rng, 12, 16, 0.3), cluster(rng, 15, 16, 0.3)])
    labels = np.repeat([0, 1], [12, 15])
    assert refs.SCALE_MIN_REST == 5
    assert refs.enrolment_scale(emb, labels, 7, K, 0, 0.95)[1] == 2 * refs.SCALE_DRAWS  # both
    assert refs.enrolment_scale(emb, labels, 10, K, 0, 0.95)[1] == refs.SCALE_DRAWS  # 15 only
    none, draws, why = refs.enrolment_scale(emb, labels, 11, K, 0, 0.95)
    assert (none, draws) == (None, 0) and "no trained source has 16 validation samples" in why
    assert refs.enrolment_scale(emb, labels, 2, K, 0, 0.95)[:2] == (None, 0)  # no leave-one-out
    same = np.repeat(emb[:1], 30, axis=0)  # no spread at all: no draw says anything
    none, _, why = refs.enrolment_scale(same, np.zeros(30, int), 10, K, 0, 0.95)
    assert none is None and "no spread" in why


def test_every_draw_weighs_the_same_whatever_its_number_of_other_images() -> None:
    """A source with few images (5 beyond the enrolled ones) and a heavy tail counts as much as
    one with 300: a factor weighted per image would follow the large source alone."""
    rng = np.random.default_rng(3)
    big = cluster(rng, 310, 16, 0.3)
    centre = cluster(rng, 1, 16, 0.0)
    small = np.concatenate([refs.normalise(centre + 0.05 * rng.normal(size=(8, 16)) / 4),
                            cluster(rng, 7, 16, 0.3)])  # 8 tight images and 7 strays
    both = refs.enrolment_scale(np.concatenate([big, small]), np.repeat([0, 1], [310, 15]), 10,
                                K, 0, 0.95)[0]
    alone = refs.enrolment_scale(big, np.zeros(310, int), 10, K, 0, 0.95)[0]
    assert both is not None and alone is not None and both > 1.3 * alone


def test_the_simulation_keeps_to_its_budget_with_many_sources_or_images() -> None:
    rng = np.random.default_rng(4)
    emb = np.concatenate([cluster(rng, 16, 8, 0.3) for _ in range(200)])
    labels = np.repeat(np.arange(200), 16)
    _, draws, _ = refs.enrolment_scale(emb, labels, 10, K, 0, 0.95)
    assert draws == refs.SCALE_FIT_BUDGET // 10  # one draw each for 160 of the 200 sources
    _, draws, _ = refs.enrolment_scale(emb[:16 * 10], labels[:160], 10, K, 0, 0.95)
    assert draws == 10 * (refs.SCALE_FIT_BUDGET // (10 * 10))  # 16 per source, not 20
    _, draws, _ = refs.enrolment_scale(emb, labels, 10, K, 0, 0.95, fit_budget=100)
    assert draws == 10


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
    scale, draws, _ = refs.enrolment_scale(model.samples_[flags], model.sample_sources_[flags],
                                           10, K, model.seed, model.target_accept)
    assert record["threshold_rule"] == "leave-one-image-out, scaled mean"
    assert record["threshold_scale"] == pytest.approx(scale)
    assert record["threshold_scale_draws"] == draws == 3 * refs.SCALE_DRAWS
    # the self-check re-enrols 9 of the 10 images: by the rule's factor for 9
    check_scale = model.enrolment_scale(9, refs.SCALE_FIT_BUDGET // 2)[0]
    assert record["loo_threshold_scale"] == pytest.approx(check_scale)
    assert check_scale != pytest.approx(scale)
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


def test_the_quantile_rule_takes_over_once_it_is_no_longer_the_largest_distance(
        model: MetricAttributor) -> None:
    """At 95% the quantile of n ≤ 38 distances is their largest, the case the scaled mean
    replaces; at 80% up to 8 only (the rank ⌈0.8 (n + 1)⌉ reaches n while n < 9)."""
    m = copy.deepcopy(model)
    m.target_accept = 0.8
    assert m.enroll(new_source(8), "p8")["threshold_rule"] == "leave-one-image-out, scaled mean"
    record = m.enroll(new_source(9, seed=7), "p9")
    assert record["threshold_rule"] == "leave-one-image-out"
    assert "80% quantile of their leave-one-out distances is no longer their largest" in \
        record["threshold_scale_note"]


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


def test_flags_without_samples_are_refused_on_load(model: MetricAttributor,
                                                   tmp_path: Path) -> None:
    model.save(tmp_path / "bad")
    for name in ("samples", "sample_sources", "separators"):
        (tmp_path / "bad" / f"{name}.npy").unlink()
    _refresh_checksums(tmp_path / "bad")
    with pytest.raises(ModelFormatError, match="sample_validation"):
        genprint.load(tmp_path / "bad")


def test_validation_samples_are_kept_first_when_samples_are_thinned() -> None:
    labels = np.repeat([0, 1], [3000, 40])
    prefer = np.r_[np.zeros(2850, bool), np.ones(150, bool), np.zeros(30, bool), np.ones(10, bool)]
    keep = refs.sample_subset(labels, 1000, 0, prefer=prefer)
    assert np.sum(labels[keep] == 0) == 1000 and prefer[keep][labels[keep] == 0].sum() == 150
    assert np.sum(labels[keep] == 1) == 40  # under the cap: all kept
    np.testing.assert_array_equal(refs.sample_subset(labels, 1000, 0),  # without: as before
                                  refs.sample_subset(labels, 1000, 0, prefer=None))


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
    assert "threshold: distance " in text and "× the mean distance of each enrolment image" in text
    assert "warning" not in text  # a tight new source
    assert "60 simulated enrolments of 10 validation images of the trained sources (3 with " \
        "enough of them)" in text
    more = []
    for i, img in enumerate(new_source(20, seed=7)):
        more.append(tmp_path / f"more{i:02d}.png")
        Image.fromarray(img).save(more[-1])
    out = CliRunner().invoke(app, ["enroll", str(tmp_path / "m"), "--source", "p6",
                                   *map(str, more)])
    assert out.exit_code == 0, out.output  # 20 images: too few validation samples to simulate
    text = " ".join(out.output.split())
    assert "not their scaled mean: no trained source has 25 validation samples" in text
    rng = np.random.default_rng(3)  # a spread-out source: textures and noise of many levels
    spread = []
    for i, period in enumerate([2, 3, 5, 7, 2, 3, 5, 7, 2, 3]):
        img = textured(rng, 32, 32, period) if i % 2 else np.clip(
            rng.normal(128, 10 + 8 * i, (32, 32, 3)), 0, 255).astype(np.uint8)
        spread.append(tmp_path / f"spread{i}.png")
        Image.fromarray(img).save(spread[-1])
    out = CliRunner().invoke(app, ["enroll", str(tmp_path / "m"), "--source", "wide",
                                   "--out", str(tmp_path / "w"), *map(str, spread)])
    text = " ".join(out.output.split())
    assert out.exit_code == 0 and "warning: the new source's region is as wide as the widest " \
        "trained source's or wider" in text and "--threshold-rule quantile" in text
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


def test_the_factor_is_kept_for_the_next_enrolment(model: MetricAttributor, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulation is seeded, so the model keeps its factor (saved with it) and a later
    enrolment of as many images reuses it: same factor, no second simulation."""
    first = copy.deepcopy(model)
    first.enrolment_scale_cache_ = {}
    record = first.enroll(new_source(10), "p5")
    assert len(first.enrolment_scale_cache_) == 2  # 10 images, and the self-check's 9
    first.save(tmp_path / "m")
    loaded = genprint.load(tmp_path / "m")
    assert loaded.enrolment_scale_cache_ == first.enrolment_scale_cache_
    calls = []
    original = refs.enrolment_scale
    monkeypatch.setattr(refs, "enrolment_scale",
                        lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    later = loaded.enroll(new_source(10, seed=6), "p6")
    assert calls == []  # both factors came from the model
    assert (later["threshold_scale"], later["threshold_scale_draws"]) == (
        record["threshold_scale"], record["threshold_scale_draws"])
    assert later["threshold_scale_note"] == record["threshold_scale_note"]
    loaded.enroll(new_source(8, seed=7), "p7")  # another number of images: simulated
    assert calls == [8, 7]
    # another target acceptance, or another simulation, is another rule: simulated again
    loaded.target_accept = 0.9
    loaded.enrolment_scale(10)
    assert calls == [8, 7, 10]
    monkeypatch.setattr(refs, "SCALE_DRAWS", 5)
    loaded.enrolment_scale(10)
    assert calls == [8, 7, 10, 10]
    # a factor of 0 (all the other images the same as the drawn ones) is kept and loads
    loaded.enrolment_scale_cache_ = {"k": (0.0, 3, "note")}
    loaded.save(tmp_path / "zero")
    assert genprint.load(tmp_path / "zero").enrolment_scale_cache_ == {"k": (0.0, 3, "note")}
    # a card whose kept factors are not [factor, draws, note] is refused on load
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    key = next(iter(card["enrolment_scale_cache"]))
    card["enrolment_scale_cache"][key] = [1.5, "many"]
    rewrite_card(tmp_path / "m" / "card.json", card)  # its digest made to match: only the content is wrong
    with pytest.raises(ModelFormatError, match="enrolment_scale_cache"):
        genprint.load(tmp_path / "m")
