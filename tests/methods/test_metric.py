"""The `metric` method: validation-only thresholds, enrolment, tiling, persistence, camera init."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import genprint
from genprint.methods import metric_refs as refs
from genprint.methods.camera_pretrain import pretrain_camera, save_camera_checkpoint
from genprint.methods.metric import MetricAttributor
from genprint.methods.metric_refs import distances
from genprint.methods.metric_train import METRIC_LOSSES, LossBundle, has_proxies
from tests.conftest import textured

TINY = {"width": 4, "embedding_dim": 16, "batch_size": 16}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def noisy(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """A smooth image plus white noise of standard deviation ``sigma`` (another toy source)."""
    base = textured(rng, h, w, 64)
    return np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)


def toy(n: int, seed: int, size: int = 32) -> tuple[list[np.ndarray], list[str]]:
    """``n`` images of each of three toy sources (period-2 and period-3 traces, strong noise)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for name in ("p2", "p3", "noise"):
        for _ in range(n):
            img = noisy(rng, size, size, 40) if name == "noise" else textured(
                rng, size, size, int(name[1]))
            images.append(img)
            labels.append(name)
    return images, labels


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[list[np.ndarray], list[str]]]:
    return {"train": toy(30, 0), "val": toy(12, 1), "test": toy(10, 2, size=64)}


@pytest.fixture(scope="module")
def model(data: dict) -> MetricAttributor:
    torch.set_num_threads(1)
    return MetricAttributor(**TINY, epochs=6, refs_per_class=1).fit(*data["train"],
                                                                    *data["val"])


def test_attributes_toy_sources_with_tiles(model: MetricAttributor, data: dict) -> None:
    images, labels = data["test"]
    results = model.attribute_arrays(images)
    assert np.mean([r.candidate == lab for r, lab in zip(results, labels, strict=True)]) >= 0.9
    assert all(r.n_tiles == 4 and 0.0 <= r.tile_agreement <= 1.0 for r in results)
    assert model.classes_ == ["noise", "p2", "p3"]
    assert model.references_.shape == (3, 16 + 60)  # the embedding joined to residual statistics


def test_thresholds_accept_the_target_share_of_validation_images(model: MetricAttributor,
                                                                 data: dict) -> None:
    images, labels = data["val"]
    emb = model.embed(images)
    for k, c in enumerate(model.classes_):
        own = distances(emb[np.array(labels) == c], model.references_[[k]]).min(axis=1)
        assert np.mean(-own >= model.thresholds_[k]) >= 0.9


def test_an_image_gets_the_same_scores_alone_as_in_any_batch(model: MetricAttributor,
                                                               data: dict) -> None:
    images = data["test"][0] + data["val"][0]  # 30 images of 4 tiles + 36 of 1: several chunks
    together = np.stack([p.scores for p in model.predict_arrays(images)])
    alone = np.stack([model.predict_arrays([img])[0].scores for img in images])
    np.testing.assert_array_equal(alone, together)  # bit for bit, not just close
    # with 12 validation images a source's threshold is its farthest one, which must stay
    # accepted when scored on its own (ties are accepted)
    val_images, val_labels = data["val"]
    for k, c in enumerate(model.classes_):
        own = [model.predict_arrays([img])[0].scores[k]
               for img, lab in zip(val_images, val_labels, strict=True) if lab == c]
        assert min(own) == model.thresholds_[k]


def test_acceptance_threshold_is_the_finite_sample_quantile() -> None:
    d = np.arange(1.0, 201.0)  # 200 held-out distances 1 … 200
    assert refs.acceptance_threshold(d, 0.95) == 191.0  # rank ⌈201 × 0.95⌉
    assert refs.acceptance_threshold(np.arange(1.0, 11.0), 0.95) == 10.0  # too few: the largest
    assert refs.acceptance_threshold(np.arange(1.0, 11.0), 0.5) == 6.0  # rank ⌈11 × 0.5⌉
    # a new draw from the same law is accepted at least 95% of the time, on average
    rng = np.random.default_rng(0)
    accepted = [np.mean(rng.exponential(size=1000) <= refs.acceptance_threshold(
        rng.exponential(size=30), 0.95)) for _ in range(400)]
    assert np.mean(accepted) >= 0.95
    with pytest.raises(ValueError, match="held-out"):
        refs.acceptance_threshold(np.array([]), 0.95)


def test_thresholds_come_from_validation_images_only(data: dict) -> None:
    train, (va_img, va_lab) = toy(6, 3), data["val"]
    kw = {**TINY, "epochs": 1}
    a = MetricAttributor(**kw).fit(*train, va_img, va_lab)
    b = MetricAttributor(**kw).fit(*train, va_img[::3], va_lab[::3])
    np.testing.assert_array_equal(a.references_, b.references_)  # same training: same points
    assert not np.allclose(a.thresholds_, b.thresholds_)  # thresholds follow validation data


def test_a_source_without_validation_images_is_refused() -> None:
    images, labels = toy(2, 0)
    with pytest.raises(ValueError, match="validation"):
        MetricAttributor(**TINY).fit(images, labels, images[:2], labels[:2])
    with pytest.raises(ValueError, match="reserved"):
        MetricAttributor(**TINY).fit(images, ["unknown"] * len(images), images, labels)
    with pytest.raises(ValueError, match="leading or trailing"):
        MetricAttributor(**TINY).fit(images, [s + " " for s in labels], images, labels)
    decomposed = [s + "-u\u0308" for s in labels]  # "ü" as "u" + accent
    with pytest.raises(ValueError, match="composed form"):
        MetricAttributor(**TINY).fit(images, decomposed, images, decomposed)


def test_enrolment_keeps_existing_sources_and_recognises_the_new_one(
        model: MetricAttributor) -> None:
    m = copy.deepcopy(model)
    refs, sources, thresholds = m.references_.copy(), m.reference_sources_.copy(), m.thresholds_
    rng = np.random.default_rng(5)
    new = [textured(rng, 32, 32, 5) for _ in range(10)]
    record = m.enroll(new, "p5")
    assert record["threshold_rule"] == "leave-one-image-out" and record["warnings"] == []
    assert m.classes_[:3] == model.classes_ and m.classes_[3] == "p5"
    np.testing.assert_array_equal(m.references_[: len(refs)], refs)
    np.testing.assert_array_equal(m.reference_sources_[: len(refs)], sources)
    np.testing.assert_array_equal(m.thresholds_[:3], thresholds)
    results = m.attribute_arrays([textured(rng, 32, 32, 5) for _ in range(10)])
    assert np.mean([r.label == "p5" for r in results]) >= 0.7
    with pytest.raises(ValueError, match="already known"):
        m.enroll(new, "p5")
    again = copy.deepcopy(model)
    twice = again.enroll([*new[:4], new[0].copy(), new[1]], "p5-\u00e9")  # 2 pictures repeated
    assert twice["n_images"] == 4 and twice["n_repeated"] == 2
    with pytest.raises(ValueError, match="already known"):  # "é" as "e" + accent: one name
        again.enroll(new, "p5-e\u0301")


def test_a_name_an_older_genprint_enrolled_decomposed_loads_as_enrolled(
        model: MetricAttributor, tmp_path: Path) -> None:
    """Before enrolment put names in Unicode's composed form, a name typed on macOS was kept
    decomposed; such a model loads with the name composed, still enrolled, and saves again."""
    import unicodedata

    from tests.conftest import rewrite_card

    m = copy.deepcopy(model)
    rng = np.random.default_rng(11)
    m.enroll([textured(rng, 32, 32, 5) for _ in range(4)], "M\u00fcller", separator=True)
    m.save(tmp_path / "m")
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    card["classes"][-1] = card["training"]["enrolled"][0]["source"] = unicodedata.normalize(
        "NFD", "M\u00fcller")
    rewrite_card(tmp_path / "m" / "card.json", card)
    loaded = genprint.load(tmp_path / "m")
    assert loaded.classes_[-1] == "M\u00fcller" and loaded.enrolled_sources == {"M\u00fcller"}
    assert loaded._enrolled_mask().tolist() == [False, False, False, True]
    loaded.enroll([textured(rng, 32, 32, 7) for _ in range(4)], "p7")
    loaded.save(tmp_path / "m", overwrite=True)
    assert genprint.load(tmp_path / "m").enrolled_sources == {"M\u00fcller", "p7"}


def test_a_refit_forgets_the_earlier_fit_and_its_enrolments(model: MetricAttributor) -> None:
    m = copy.deepcopy(model)
    rng = np.random.default_rng(13)
    m.enroll([textured(rng, 32, 32, 5) for _ in range(4)], "p5")
    m.training_fingerprints_ = np.zeros((1, 32), np.uint8)  # as a fit from files records
    m.epochs = 1
    m.fit(*toy(8, 3), *toy(4, 4))
    assert m.classes_ == ["noise", "p2", "p3"] and m.enrolled_sources == set()
    assert "enrolled" not in m.training_info_ and not m._enrolled_mask().any()
    assert m.training_fingerprints_ is None and m.model_sha256_ is None


def test_an_enrolment_of_one_picture_in_disguise_is_flagged(model: MetricAttributor) -> None:
    """Pictures that differ only where the model does not look (outside the tiles) are one
    picture to it: a source of zero width, whose self-check would say 100%."""
    core = textured(np.random.default_rng(17), 34, 34, 5)
    copies = []
    for i in range(4):
        img = core.copy()
        img[-1, i, 0] ^= 1 + i  # the last row lies outside the centred 32×32 tile
        copies.append(img)
    record = copy.deepcopy(model).enroll(copies, "one-picture")
    assert record["n_images"] == 4 and record["threshold"] > -1e-6
    assert len(record["warnings"]) == 1 and "far narrower" in record["warnings"][0]


def test_a_failed_refit_and_an_older_refit_leave_enrolments_consistent(
        model: MetricAttributor, tmp_path: Path) -> None:
    from genprint.io.images import ImageError
    from genprint.io.sources import Item
    from genprint.methods.fitting import fit_on_items
    from tests.conftest import rewrite_card

    m = copy.deepcopy(model)
    rng = np.random.default_rng(23)
    m.enroll([textured(rng, 32, 32, 5) for _ in range(4)], "p5")
    tiny = [textured(rng, 16, 16, 2) for _ in range(6)]
    with pytest.raises(ImageError):  # smaller than the tiles: the refit fails ...
        m.fit(tiny, ["p2", "p3"] * 3, tiny[:2], ["p2", "p3"])
    assert m.enrolled_sources == {"p5"} and m._enrolled_mask()[-1]  # ... and changes nothing
    with pytest.raises(ValueError, match="batch_size"):  # refused before any file is read
        fit_on_items(MetricAttributor(batch_size=1), [Item(tmp_path / "none.png", "p2")], [])
    # a model an earlier genprint refitted after an enrolment kept the enrolment's record
    m.save(tmp_path / "m")
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    card["training"]["enrolled"].insert(0, {**card["training"]["enrolled"][0], "source": "gone"})
    rewrite_card(tmp_path / "m" / "card.json", card)
    assert genprint.load(tmp_path / "m").enrolled_sources == {"gone", "p5"}


def test_a_forged_model_that_would_decide_wrongly_is_refused(model: MetricAttributor,
                                                           tmp_path: Path) -> None:
    """Edits that keep the card's digest and checksums right (recomputed, as a forger would):
    a reference point of NaN, source numbers that are not integers, a NaN threshold, an
    enrolment record naming a trained source."""
    from genprint.storage.model_dir import ModelFormatError
    from tests.conftest import rewrite_card

    m = copy.deepcopy(model)
    m.enroll([textured(np.random.default_rng(19), 32, 32, 5) for _ in range(4)], "p5")
    m.save(tmp_path / "good")

    def forged(name: str, array: np.ndarray | None = None, edit: object = None) -> Path:
        out = tmp_path / name
        shutil.copytree(tmp_path / "good", out)
        card = json.loads((out / "card.json").read_text())
        if array is not None:
            np.save(out / f"{name.split('-')[0]}.npy", array)
            card["files"][f"{name.split('-')[0]}.npy"] = hashlib.sha256(
                (out / f"{name.split('-')[0]}.npy").read_bytes()).hexdigest()
        if edit is not None:
            edit(card)
        rewrite_card(out / "card.json", card)
        return out

    refs_nan = m.references_.copy()
    refs_nan[0] = np.nan
    sources = m.reference_sources_.astype(np.float64) + 0.25
    cases = {
        forged("references-nan", refs_nan): "not finite",
        forged("reference_sources-float", sources): "integers",
        forged("thresholds-nan", None,
               lambda c: c["thresholds"].__setitem__(0, float("nan"))): "NaN",
        forged("enrolled-trained", None,
               lambda c: c["training"]["enrolled"][0].__setitem__("source", "p2")): "enrolment",
    }
    for path, reason in cases.items():
        with pytest.raises(ModelFormatError, match=reason):
            genprint.load(path)
    assert genprint.load(tmp_path / "good").enrolled_sources == {"p5"}


@pytest.mark.parametrize("setting", [{"width": 0}, {"embedding_dim": 0}, {"patch_size": 4},
                                     {"max_tiles": 0}, {"batch_size": 1}, {"epochs": -1},
                                     {"lr": 0.0}, {"target_accept": 1.5}, {"width": 2.5}])
def test_settings_that_cannot_train_are_refused_before_any_work(setting: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(setting))):
        MetricAttributor(**{**TINY, **setting}).fit(*toy(2, 0), *toy(1, 1))


def test_enrolment_refuses_unusable_source_names(model: MetricAttributor) -> None:
    images, _ = toy(1, 7)
    for name in ("unknown", "Unknown", "", "gan\nx", model.classes_[0]):
        with pytest.raises(ValueError):
            copy.deepcopy(model).enroll(images[:3], name)


def test_enrolment_points_follow_the_trained_sources_rule(model: MetricAttributor) -> None:
    rng = np.random.default_rng(9)
    new = [textured(rng, 32, 32, 5) for _ in range(6)]
    for k, expected in ((1, 1), (4, 4), (8, 6)):  # min(K, images) points
        m = copy.deepcopy(model)
        m.refs_per_class = k
        record = m.enroll(new, "p5")
        assert record["n_reference_points"] == expected
        assert np.sum(m.reference_sources_ == 3) == expected
    m = copy.deepcopy(model)
    m.refs_per_class = 8
    m.enroll(new, "p5")  # K ≥ images: every image's embedding is a reference point
    np.testing.assert_allclose(m.references_[m.reference_sources_ == 3], m.embed(new), atol=1e-6)


def test_enrolment_threshold_rules_for_few_images(model: MetricAttributor) -> None:
    rng = np.random.default_rng(6)
    one_tile = copy.deepcopy(model).enroll([textured(rng, 32, 32, 5)], "p5")
    assert one_tile["threshold_rule"] == "median of existing thresholds"
    assert one_tile["threshold"] == pytest.approx(float(np.median(model.thresholds_)))
    nine_tiles = copy.deepcopy(model).enroll([textured(rng, 96, 96, 5)], "p5")
    assert nine_tiles["threshold_rule"] == "leave-one-tile-out" and nine_tiles["n_tiles"] == 9


def test_enrolled_distances_are_what_an_enrolment_records(model: MetricAttributor) -> None:
    """``metric_refs.enrolled_distances`` (the benchmarks' simulated enrolments) gives the
    threshold ``enroll`` records (as a score: its negative) and the distances to the points it adds."""
    from genprint.methods import metric_refs

    rng = np.random.default_rng(9)
    few = [textured(rng, 32, 32, 5) for _ in range(5)]
    rest = [textured(rng, 32, 32, 5) for _ in range(3)]
    m = copy.deepcopy(model)
    record = m.enroll(few, "p5")
    scale = model.enrolment_scale(len(few))[0]
    assert scale is not None and record["threshold_rule"] == "leave-one-image-out, scaled mean"
    t, d = metric_refs.enrolled_distances(m.embed(few), m.embed(rest), m.refs_per_class,
                                          m.seed, m.target_accept, -np.asarray(model.thresholds_),
                                          scale)
    assert t == pytest.approx(-record["threshold"])  # the record gives it as a score
    new_points = m.references_[m.reference_sources_ == len(m.classes_) - 1]
    np.testing.assert_allclose(d, metric_refs.distances(m.embed(rest), new_points).min(axis=1),
                               atol=1e-6)


def test_tiles_are_exact_crops_never_resized(model: MetricAttributor) -> None:
    img = textured(np.random.default_rng(7), 70, 100, 3)
    [pred] = model.predict_arrays([img])
    assert pred.n_tiles == 6  # 2 × 3 tiles of 32 on a centred grid
    top, left = (70 - 64) // 2, (100 - 96) // 2
    crops = [img[top + r * 32 : top + r * 32 + 32, left + c * 32 : left + c * 32 + 32]
             for r in range(2) for c in range(3)]
    mean = model.embed(crops).mean(axis=0)
    np.testing.assert_allclose(model.embed([img])[0], mean / np.linalg.norm(mean), atol=1e-5)
    [small] = model.attribute_arrays([img[:20]])
    assert small.error_code == "too_small"


def test_save_load_round_trip_gives_identical_predictions(model: MetricAttributor,
                                                          tmp_path: Path) -> None:
    m = copy.deepcopy(model)
    m.enroll([textured(np.random.default_rng(8), 32, 32, 5) for _ in range(4)], "p5")
    m.save(tmp_path / "model")
    loaded = genprint.load(tmp_path / "model")
    assert isinstance(loaded, MetricAttributor) and loaded.classes_ == m.classes_
    imgs = toy(3, 9, size=48)[0]
    assert ([r.to_dict() for r in m.attribute_arrays(imgs)]
            == [r.to_dict() for r in loaded.attribute_arrays(imgs)])
    assert loaded.training_info_["enrolled"][0]["source"] == "p5"


def test_model_hash_on_rows_follows_the_saved_model(model: MetricAttributor,
                                                    tmp_path: Path) -> None:
    m = copy.deepcopy(model)
    m.model_sha256_ = None
    img = toy(3, 9, size=48)[0][:1]
    assert m.attribute_arrays(img)[0].model_sha256 is None  # never saved
    m.save(tmp_path / "a")
    card_a = hashlib.sha256((tmp_path / "a" / "card.json").read_bytes()).hexdigest()
    loaded = genprint.load(tmp_path / "a")
    assert m.attribute_arrays(img)[0].model_sha256 == card_a
    assert loaded.attribute_arrays(img)[0].model_sha256 == card_a
    loaded.enroll([textured(np.random.default_rng(8), 32, 32, 5) for _ in range(4)], "p5")
    assert loaded.attribute_arrays(img)[0].model_sha256 is None  # no saved model holds it
    loaded.save(tmp_path / "b")
    card_b = hashlib.sha256((tmp_path / "b" / "card.json").read_bytes()).hexdigest()
    assert card_b != card_a and loaded.attribute_arrays(img)[0].model_sha256 == card_b


@pytest.mark.parametrize("loss", METRIC_LOSSES.names())
def test_every_loss_trains(loss: str) -> None:
    images, labels = toy(4, 10)
    m = MetricAttributor(**TINY, loss=loss, epochs=1, refs_per_class=2).fit(
        images, labels, images, labels)
    assert np.isfinite(m.training_info_["loss_history"]).all()
    assert np.bincount(m.reference_sources_).tolist() == [2, 2, 2]


def test_a_registered_loss_can_be_used_by_name() -> None:
    calls = []

    def my_loss(n_classes: int, embedding_dim: int) -> LossBundle:
        calls.append((n_classes, embedding_dim))
        return METRIC_LOSSES.get("supcon")(n_classes, embedding_dim)

    METRIC_LOSSES.add("test-own-loss", my_loss, proxies=False)
    try:
        images, labels = toy(4, 10)
        MetricAttributor(**TINY, loss="test-own-loss", epochs=1).fit(images, labels, images,
                                                                     labels)
        assert calls == [(3, 16)]
    finally:
        METRIC_LOSSES.remove("test-own-loss")
    with pytest.raises(ValueError, match="proxy-anchor"):
        MetricAttributor(**TINY, loss="no-such-loss").fit(images, labels, images, labels)
    assert has_proxies("proxy-anchor") and has_proxies("arcface") and not has_proxies("nca")


def test_proxy_reference_points() -> None:
    images, labels = toy(4, 11)
    m = MetricAttributor(**TINY, epochs=1, references="proxies").fit(
        images, labels, images, labels)
    assert m.references_.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(m.references_, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="proxy"):
        MetricAttributor(**TINY, loss="supcon", references="proxies").fit(
            images, labels, images, labels)


def test_camera_init_starts_from_the_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    cams = [textured(rng, 32, 32, p) for p in (2, 4) for _ in range(6)]
    names = ["cam-a"] * 6 + ["cam-b"] * 6
    from genprint.backbones.forensic_cnn import ForensicCNNConfig

    pre = pretrain_camera(cams, names, cams, names, epochs=1, batch_size=6,
                          config=ForensicCNNConfig(embedding_dim=16, width=4))
    save_camera_checkpoint(pre, tmp_path / "ckpt")
    images, labels = toy(3, 13)
    m = MetricAttributor(**TINY, epochs=0, init="camera", camera_ckpt=str(tmp_path / "ckpt"))
    m.fit(images, labels, images, labels)
    for name, value in pre.net.state_dict().items():
        torch.testing.assert_close(m.net_.state_dict()[name], value)
    # the saved card names the checkpoint without this machine's folders, and hashes it
    m.save(tmp_path / "model")
    card = json.loads((tmp_path / "model" / "card.json").read_text())
    assert card["params"]["camera_ckpt"] == "ckpt"
    assert str(tmp_path) not in (tmp_path / "model" / "card.json").read_text()
    assert card["training"]["camera_ckpt_sha256"] == hashlib.sha256(
        (tmp_path / "ckpt" / "card.json").read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="architecture"):
        MetricAttributor(width=8, embedding_dim=16, epochs=0, init="camera",
                         camera_ckpt=str(tmp_path / "ckpt")).fit(images, labels, images, labels)


def test_origin_classes_split_the_loss_classes_but_not_the_sources() -> None:
    from genprint.methods.metric import training_classes

    labels = ["real", "real", "real", "gan", "gan"]
    origins = ["cam-2", "cam-1", "cam-2", None, None]
    index = {"gan": 0, "real": 1}
    y, parent = training_classes(labels, origins, index)
    assert y.tolist() == [2, 1, 2, 0, 0]  # (gan), (real, cam-1), (real, cam-2)
    assert parent.tolist() == [0, 1, 1]
    y, parent = training_classes(labels, None, index)
    assert y.tolist() == [1, 1, 1, 0, 0] and parent.tolist() == [0, 1]


def test_origins_reach_the_loss_and_predictions_stay_per_source(data: dict) -> None:
    images, labels = data["train"]
    origins = [f"{lab}-{i % 2}" if lab == "noise" else None for i, lab in enumerate(labels)]
    kw = {**TINY, "epochs": 1, "refs_per_class": 2}
    split = MetricAttributor(**kw, loss="arcface", references="proxies", origin_classes=True).fit(
        images, labels, *data["val"], train_origins=origins)
    assert split.training_info_["loss_classes"] == 4
    assert split.classes_ == ["noise", "p2", "p3"]
    assert split.reference_sources_.tolist() == [0, 0, 1, 2]  # one proxy per (source, origin)
    plain = MetricAttributor(**kw, origin_classes=False).fit(
        images, labels, *data["val"], train_origins=origins)
    assert plain.training_info_["loss_classes"] == 3
    with pytest.raises(ValueError, match="differ in length"):
        MetricAttributor(**kw, origin_classes=True).fit(images, labels, *data["val"],
                                                        train_origins=origins[:3])


def test_unseen_origin_distances_leave_the_image_origin_out() -> None:
    from genprint.methods.metric_refs import unseen_origin_distances

    e = np.eye(4, dtype=np.float32)
    train = np.stack([e[0], e[0], e[1], e[1]])
    val = np.stack([e[0], e[1]])
    d = unseen_origin_distances(val, ["a", "b"], train, ["a", "a", "b", "b"], k=1, seed=0)
    np.testing.assert_allclose(d, [np.sqrt(2), np.sqrt(2)], atol=1e-6)  # only the other origin
    assert unseen_origin_distances(val, ["a", None], train, ["a", "a", "b", "b"], 1, 0) is None
    assert unseen_origin_distances(val, ["a", "a"], train, ["a"] * 4, 1, 0) is None


def test_thresholds_of_a_source_with_origins_hold_for_unseen_origins(data: dict) -> None:
    images, labels = data["train"]
    va_img, va_lab = data["val"]
    tr_o = [f"cam-{i % 3}" if lab == "noise" else lab for i, lab in enumerate(labels)]
    va_o = [f"cam-{i % 3}" if lab == "noise" else lab for i, lab in enumerate(va_lab)]
    kw = {**TINY, "epochs": 1, "refs_per_class": 2}
    unseen = MetricAttributor(**kw, unseen_origin_thresholds=True).fit(
        images, labels, va_img, va_lab, train_origins=tr_o, val_origins=va_o)
    seen = MetricAttributor(**kw).fit(
        images, labels, va_img, va_lab, train_origins=tr_o, val_origins=va_o)
    np.testing.assert_array_equal(unseen.references_, seen.references_)
    assert unseen.training_info_["thresholds_for_unseen_origins"] == ["noise"]
    k = unseen.classes_.index("noise")
    from genprint.methods.metric_refs import unseen_origin_distances

    tr = [i for i, lab in enumerate(labels) if lab == "noise"]
    va = [i for i, lab in enumerate(va_lab) if lab == "noise"]
    d = unseen_origin_distances(unseen.embed([va_img[i] for i in va]), [va_o[i] for i in va],
                                unseen.embed([images[i] for i in tr]), [tr_o[i] for i in tr],
                                k=2, seed=0)
    assert d is not None
    assert unseen.thresholds_[k] == pytest.approx(-refs.acceptance_threshold(d, 0.95))
    assert unseen.thresholds_[k] != seen.thresholds_[k]
    others = [i for i in range(3) if i != k]
    np.testing.assert_array_equal(unseen.thresholds_[others], seen.thresholds_[others])


def test_enrolled_sources_only_add() -> None:
    # distances of 5 images to 3 sources: trained 0 and 1 (thresholds 1.0), enrolled 2 (0.5)
    d = np.array([[0.9, 2.0, 0.3],    # enrolled nearest and accepts → enrolled
                  [0.9, 2.0, 0.7],    # enrolled nearest but rejects → the trained rule: 0
                  [1.2, 2.0, 0.45],   # enrolled nearest and accepts, trained rejects → 2
                  [1.2, 1.1, 1.5],    # nearest trained rejects → unknown (not the second trained)
                  [1.2, 2.0, 0.6]])   # enrolled rejects, nearest trained rejects → unknown
    t = np.array([1.0, 1.0, 0.5])
    enrolled = np.array([False, False, True])
    assert refs.decide_sources(d, t, enrolled).tolist() == [2, 0, 2, -1, -1]
    # without enrolled sources: the nearest source, within its threshold
    assert refs.decide_sources(d[:, :2], t[:2], enrolled[:2]).tolist() == [0, 0, -1, -1, -1]
    # a trained source that rejects does not stop an enrolled one further away that accepts
    assert refs.decide_sources(np.array([[1.2, 2.0, 1.3]]), np.array([1.0, 1.0, 1.5]),
                               enrolled).tolist() == [2]


def test_enrolment_never_makes_an_accepted_image_unknown(model: MetricAttributor,
                                                        data: dict) -> None:
    images, _ = data["test"]
    before = model.attribute_arrays(images)
    enrolled = copy.deepcopy(model)
    val_images, val_labels = data["val"]
    like_p2 = [img for img, lab in zip(val_images, val_labels, strict=True) if lab == "p2"]
    enrolled.enroll(like_p2[:4], "new")  # a new source right among p2's images
    assert enrolled.enrolled_sources == {"new"} and model.enrolled_sources == set()
    # a tight threshold for the new source, so that it rejects images it is nearest to
    enrolled.thresholds_[-1] = -1e-6
    after = enrolled.attribute_arrays(images)
    # the case arises: some images are nearest to the new source (which rejects them)
    assert any(max(a.scores, key=a.scores.__getitem__) == "new" for a in after)
    for b, a in zip(before, after, strict=True):
        if not b.is_unknown:
            assert a.label in (b.label, "new")


def test_a_card_naming_the_shipped_checkpoint_rebuilds_from_it() -> None:
    from genprint.methods.camera_pretrain import checkpoint_architecture, default_camera_checkpoint

    shipped = default_camera_checkpoint()
    if shipped is None:
        pytest.skip("no shipped camera checkpoint in this checkout")
    arch = checkpoint_architecture(shipped)
    m = MetricAttributor(init="camera", camera_ckpt="shipped", width=arch.width,
                         embedding_dim=arch.embedding_dim, blocks=arch.blocks)
    net = m._initial_network()
    from genprint.backbones.forensic_cnn import ForensicCNN, load_weights

    ref = ForensicCNN(net.config)
    load_weights(ref, str(shipped))
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value)


def test_fit_and_enroll_refuse_images_that_are_not_rgb_uint8() -> None:
    """Arrays from elsewhere (floats, grey, RGBA) would train or enrol on another scale of
    pixels without a word; they are refused, naming the image, and nothing changes."""
    images, labels = toy(4, 2)
    floats = [img.astype(np.float32) for img in images]
    with pytest.raises(ValueError, match=r"training image 0 is not an \(H, W, 3\) uint8"):
        MetricAttributor(**TINY, epochs=1).fit(floats, labels, images, labels)
    with pytest.raises(ValueError, match="validation image 0"):
        MetricAttributor(**TINY, epochs=1).fit(images, labels, [img[..., :1] for img in images],
                                               labels)
    model = MetricAttributor(**TINY, epochs=1, refs_per_class=1).fit(images, labels, images,
                                                                      labels)
    before = model.references_.copy()
    with pytest.raises(ValueError, match=r"enrolment image 1 is not an \(H, W, 3\) uint8"):
        model.enroll([images[0], floats[1], images[2]], "newcomer")
    assert "newcomer" not in model.classes_
    np.testing.assert_array_equal(model.references_, before)


def test_enrolment_refuses_pictures_the_model_already_holds(model: MetricAttributor,
                                                           data: dict) -> None:
    from genprint.io.fingerprint import fingerprints
    from genprint.methods.metric import EnrolmentConflict

    m = copy.deepcopy(model)
    m.training_fingerprints_ = fingerprints(data["train"][0])  # as a fit on files keeps them
    rng = np.random.default_rng(11)
    new = [textured(rng, 32, 32, 5) for _ in range(4)]
    before = (m.classes_[:], m.references_.copy())
    with pytest.raises(EnrolmentConflict, match=r"1 of the 5 enrolment image\(s\) \(first: "
                                                r"image 2\) have the same pixels") as err:
        m.enroll([*new[:2], data["train"][0][3].copy(), *new[2:]], "p5")
    assert err.value.indices == [2]
    assert m.classes_ == before[0] and np.array_equal(m.references_, before[1])
    m.enroll(new, "p5")  # the new pictures alone
    with pytest.raises(EnrolmentConflict):  # and now they are the model's too
        m.enroll(new[:2], "p5-again")
