"""The ``probe`` method: heads and scores, layer choice, feature cache, save / load round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import genprint
from genprint.backbones.features import FeatureCache, extract_features, image_key
from genprint.backbones.resolve import resolve_backbone
from genprint.methods.probe import ProbeAttributor, cap_per_class
from genprint.methods.probe_heads import HEADS, SCORES, LayerProbe
from genprint.methods.probe_select import choose_layer, loso_auroc, macro_ovr_auroc, sweep
from genprint.storage.model_dir import ModelFormatError
from tests.backbones.user_checkpoints import save_open_clip_checkpoint

torch.set_num_threads(1)
pytest.importorskip("faiss")


def clusters(rng: np.random.Generator, centres: np.ndarray, n: int, noise: float = 0.3) \
        -> tuple[np.ndarray, np.ndarray]:
    """``n`` points around each centre, with their centre's index as label."""
    x = np.concatenate([c + noise * rng.standard_normal((n, centres.shape[1])) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(len(centres)), n)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("score", SCORES)
def test_heads_and_scores_separate_known_from_unknown(head: str, score: str) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 16)) * 2
    x_tr, y_tr = clusters(rng, centres[:3], 40)
    x_te, y_te = clusters(rng, centres[:3], 20)
    x_un, _ = clusters(rng, centres[3:], 20)
    probe = LayerProbe.fit(x_tr, y_tr, 3, head, score, 1.0 if head == "logreg" else 5)
    cand, scores = probe.source_scores(np.concatenate([x_te, x_un]))
    assert scores.shape == (80, 3) and np.isfinite(scores).all()
    assert np.mean(cand[:60] == y_te) > 0.95
    if score in ("knn", "mahalanobis"):  # distance-based: the far cluster scores lower
        own = scores[np.arange(80), cand]
        assert own[:60].mean() > own[60:].mean()


def test_binary_logreg_and_energy_consistency() -> None:
    rng = np.random.default_rng(1)
    x, y = clusters(rng, rng.standard_normal((2, 8)) * 3, 30)
    probe = LayerProbe.fit(x, y, 2, "logreg", "energy", 1.0)
    logits, probs = probe.head_outputs(probe.standardise(x))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    cand, scores = probe.source_scores(x)
    np.testing.assert_array_equal(cand, scores.argmax(axis=1))
    lse = np.log(np.exp(logits.astype(np.float64)).sum(axis=1))
    np.testing.assert_allclose(scores.max(axis=1), lse, rtol=1e-4)


def test_sweep_loso_and_layer_choice() -> None:
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((3, 12)) * 2
    x_tr, y_tr = clusters(rng, centres, 30)
    x_va, y_va = clusters(rng, centres, 10)
    probe, row = sweep(x_tr, y_tr, x_va, y_va, 3, "logreg", "msp", grid=[0.01, 1.0])
    assert row["hp"] in (0.01, 1.0) and row["val_accuracy"] > 0.9
    assert macro_ovr_auroc(y_va, probe.head_outputs(probe.standardise(x_va))[1]) > 0.9
    distance, _ = sweep(x_tr, y_tr, x_va, y_va, 3, "logreg", "mahalanobis", grid=[1.0])
    assert loso_auroc(x_tr, y_tr, x_va, y_va, 3, distance) > 0.9  # a left-out cluster is far
    assert np.isnan(loso_auroc(x_tr[y_tr < 2], y_tr[y_tr < 2], x_va, y_va, 3, probe))
    noise = {"val_accuracy": 0.4, "val_loso_auroc": 0.5, "val_ovr_auroc": 0.6}
    good = {"val_accuracy": 0.9, "val_loso_auroc": 0.8, "val_ovr_auroc": 0.9}
    assert choose_layer([noise, good, dict(good)], "balanced") == 1  # ties: earlier layer
    assert choose_layer([{**noise, "val_loso_auroc": 0.99}, good], "loso") == 0
    assert choose_layer([noise, {**good, "val_loso_auroc": float("nan")}], "balanced") == 1


def test_cap_per_class_is_seeded_and_bounded() -> None:
    labels = ["a"] * 10 + ["b"] * 3
    keep = cap_per_class(labels, 4, seed=0)
    assert sum(labels[i] == "a" for i in keep) == 4 and sum(labels[i] == "b" for i in keep) == 3
    assert keep == cap_per_class(labels, 4, seed=0) and keep == sorted(keep)
    assert cap_per_class(labels, None, 0) == list(range(13))


def toy_images(rng: np.random.Generator, colour: tuple[int, int, int], n: int) -> list[np.ndarray]:
    """Noisy 32×32 images around a colour: a toy 'source' a random ViT can tell apart."""
    base = rng.normal(0, 25, (n, 32, 32, 3)) + np.array(colour) + rng.normal(0, 10, (n, 1, 1, 3))
    return list(np.clip(base, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def toy_data() -> dict[str, list]:
    rng = np.random.default_rng(0)
    colours = {"real": (110, 110, 110), "gan-a": (170, 90, 90), "gan-b": (90, 90, 170)}
    data: dict[str, list] = {k: [] for k in ("tr", "trl", "va", "val", "te", "tel")}
    for name, colour in colours.items():
        for split, n in (("tr", 24), ("va", 8), ("te", 8)):
            data[split] += toy_images(rng, colour, n)
            data[split + "l"] += [name] * n
    return data


def test_fit_save_load_attribute(tmp_path: Path, toy_data: dict[str, list]) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "clip.pt")
    model = ProbeAttributor(backbone=str(ckpt), grid=[0.1, 10.0], per_class=20,
                            cache_dir=str(tmp_path / "cache"))
    model.fit(toy_data["tr"], toy_data["trl"], toy_data["va"], toy_data["val"])
    assert model.classes_ == ["gan-a", "gan-b", "real"]
    assert model.training_info_["n_train_used"] == 60
    assert model.min_size == 32 and len(model.layer_table()) == 2
    assert sum(r["chosen"] for r in model.layer_table()) == 1
    results = model.attribute_arrays(toy_data["te"])
    accuracy = np.mean([r.candidate == lab for r, lab in zip(results, toy_data["tel"],
                                                              strict=True)])
    assert accuracy >= 0.9
    assert model.embed(toy_data["te"][:3]).shape == (3, 64)
    # 8 validation images per source: each threshold is its source's worst validation score
    # (the rule every method shares), so every validation image is accepted again
    val_results = model.attribute_arrays(toy_data["va"])
    for k, c in enumerate(model.classes_):
        own = [r.scores[c] for r, lab in zip(val_results, toy_data["val"], strict=True)
               if lab == c]
        assert min(own) == pytest.approx(model.thresholds_[k], abs=1e-5)

    out = model.save(tmp_path / "model")
    table = json.loads((out / "layers.json").read_text())
    assert [r["layer"] for r in table] == ["block0", "block1"]
    loaded = genprint.load(out)
    assert isinstance(loaded, ProbeAttributor) and loaded.layer_name_ == model.layer_name_
    again = loaded.attribute_arrays(toy_data["te"])
    for a, b in zip(results, again, strict=True):
        assert a.label == b.label and a.score == pytest.approx(b.score, rel=1e-5)
        assert a.scores.keys() == b.scores.keys()

    # the backbone's weights changed under the model: refused, never silently wrong
    save_open_clip_checkpoint(ckpt, seed=1)
    stale = genprint.load(out)
    with pytest.raises(ModelFormatError, match="weights"):
        stale.attribute_arrays(toy_data["te"][:1])


def test_knn_head_and_fixed_layer(tmp_path: Path, toy_data: dict[str, list]) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "clip.pt")
    model = ProbeAttributor(backbone=str(ckpt), head="knn", layer=-1, grid=[5, 1], cache=False)
    model.fit(toy_data["tr"], toy_data["trl"], toy_data["va"], toy_data["val"])
    assert model.layer_name_ == "block1" and model.score == "knn"
    val_known = model.attribute_arrays(toy_data["va"])
    accepted = np.mean([not r.is_unknown for r in val_known])
    assert accepted >= 0.85  # thresholds accept ~95% of validation images of each source
    out = model.save(tmp_path / "knn-model")
    assert genprint.load(out).attribute_arrays(toy_data["te"][:2])[0].ok

    # a layer the backbone does not have is refused before any feature is extracted
    bad = ProbeAttributor(backbone=str(ckpt), layer=2, cache=False)
    bad.extract = lambda *a, **k: pytest.fail("features extracted")  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=r"layer 2 out of range: the backbone has 2 \(0 to 1"):
        bad.fit(toy_data["tr"], toy_data["trl"], toy_data["va"], toy_data["val"])


def test_feature_cache_shards(tmp_path: Path) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "clip.pt")
    backbone = resolve_backbone(str(ckpt))
    rng = np.random.default_rng(3)
    images = toy_images(rng, (100, 100, 100), 5)
    cache = FeatureCache(backbone, tmp_path / "cache")
    done: list[int] = []
    first = extract_features(backbone, images[:3], cache=cache, batch_size=2,
                             on_progress=done.append)
    assert done == [2, 1]
    shards = list(cache.folder.glob("shard-*"))
    assert len(shards) == 2 and (cache.folder / "meta.json").is_file()
    fresh = FeatureCache(backbone, tmp_path / "cache")  # a new process sees the shards
    assert set(fresh.get([image_key(i) for i in images])) == {image_key(i) for i in images[:3]}
    second = extract_features(backbone, images, cache=fresh)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a, b[:3], rtol=1e-5)
    assert len(list(cache.folder.glob("shard-*"))) == 3  # only the 2 new images computed
    flipped = images[0].copy()
    flipped[0, 0, 0] ^= 1
    assert image_key(flipped) != image_key(images[0])


def test_feature_memo_between_attribute_and_embed(tmp_path: Path, toy_data: dict[str, list],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import genprint.methods.probe as probe_module

    ckpt = save_open_clip_checkpoint(tmp_path / "clip.pt")
    model = ProbeAttributor(backbone=str(ckpt), grid=[1.0], layer=0, cache=False)
    model.fit(toy_data["tr"], toy_data["trl"], toy_data["va"], toy_data["val"])
    calls: list[int] = []
    extract = model.extract

    def counting(images, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(images))
        return extract(images, *args, **kwargs)

    monkeypatch.setattr(model, "extract", counting)
    images = toy_data["te"][:6]
    direct = model.probe_.standardise(extract(images, use_cache=False)[0])
    model.attribute_arrays(images)
    np.testing.assert_allclose(model.embed(images), direct, rtol=1e-5, atol=1e-5)
    assert calls == [6]  # embed reused the features attribute computed
    # a full memo is emptied, but the rows of the current call are still returned
    monkeypatch.setattr(probe_module, "MEMO_SIZE", 7)
    more = toy_data["te"][6:10]
    np.testing.assert_allclose(model.embed([*images[:2], *more]),
                               model.probe_.standardise(extract([*images[:2], *more],
                                                                use_cache=False)[0]),
                               rtol=1e-5, atol=1e-5)
    assert calls == [6, 4]
    # refitting forgets remembered features
    model.fit(toy_data["tr"], toy_data["trl"], toy_data["va"], toy_data["val"])
    assert not model.__dict__.get("_memo")


def test_padded_input_save_load_and_min_size(tmp_path: Path, toy_data: dict[str, list]) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "clip48.pt", image=48)  # native input 48
    model = ProbeAttributor(backbone=str(ckpt), pad="wrap", grid=[1.0], layer=-1,
                            cache_dir=str(tmp_path / "cache"))
    model.fit(toy_data["tr"], toy_data["trl"], toy_data["va"], toy_data["val"])
    assert model.backbone_spec_["input_size"] == 48 and model.backbone_spec_["pad"] == "wrap"
    assert model.min_size == 32  # the smallest side it was fitted on, not its 48 input
    results = model.attribute_arrays(toy_data["te"])
    h, w = toy_data["te"][0].shape[:2]
    copied = 1 - min(h, 48) * min(w, 48) / 48**2
    assert results[0].notes == (f"padded (wrap) from {w}×{h} to the backbone's 48×48 input: "
                                f"{copied:.0%} of the pixels analysed are copies of the image's")
    out = model.save(tmp_path / "padded")
    loaded = genprint.load(out)
    assert loaded.min_size == 32 and loaded.pad == "wrap"
    again = loaded.attribute_arrays(toy_data["te"])
    for a, b in zip(results, again, strict=True):
        assert a.label == b.label and a.score == pytest.approx(b.score, rel=1e-5)
    small = loaded.attribute_arrays([toy_data["te"][0][:24, :24]])[0]
    assert not small.ok and small.error_code == "too_small"
    # unpadded, the same checkpoint runs at 32 (the largest input that fits): other features
    plain = ProbeAttributor(backbone=str(ckpt), grid=[1.0], layer=-1, cache=False)
    plain.fit(toy_data["tr"], toy_data["trl"], toy_data["va"], toy_data["val"])
    assert plain.backbone_spec_["input_size"] == 32 and plain.min_size == 32
    assert plain.attribute_arrays(toy_data["te"][:1])[0].notes is None  # cropped, not padded
    with pytest.raises(ValueError, match="pad"):
        ProbeAttributor(pad="zeros")


def test_images_too_small_for_the_backbone_are_left_out_with_a_warning(
        tmp_path: Path, toy_data: dict[str, list]) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "clip.pt")
    tiny = toy_data["tr"][0][:1, :1]  # a 1×1 image among 32×32 ones: it used to stop training
    model = ProbeAttributor(backbone=str(ckpt), grid=[1.0], layer=-1, cache=False)
    model.fit([*toy_data["tr"], tiny], [*toy_data["trl"], toy_data["trl"][0]],
              [*toy_data["va"], tiny], [*toy_data["val"], toy_data["val"][0]])
    assert model.backbone_spec_["min_side"] == 32
    warnings = model.training_info_["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("2 image(s) with a side under")
    only_tiny = [toy_data["va"][0][:1, :1]] * len(toy_data["va"])  # every validation image
    with pytest.raises(ValueError, match="smaller than this backbone's smallest input"):
        ProbeAttributor(backbone=str(ckpt), grid=[1.0], layer=-1, cache=False).fit(
            toy_data["tr"], toy_data["trl"], only_tiny, toy_data["val"])


def test_a_few_small_images_setting_the_input_size_are_reported(
        tmp_path: Path, toy_data: dict[str, list]) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "clip48.pt", image=48)  # native input 48
    big = [np.tile(i, (2, 2, 1)) for i in toy_data["tr"]]  # 64×64 images, and one 20×20
    val = [np.tile(i, (2, 2, 1)) for i in toy_data["va"]]
    small = [i[:20, :20] for i in toy_data["tr"][::3]]  # 24 of 120 images: too many to drop
    model = ProbeAttributor(backbone=str(ckpt), grid=[1.0], layer=-1, cache=False)
    model.fit([*big, *small], [*toy_data["trl"], *toy_data["trl"][::3]], val, toy_data["val"])
    assert model.backbone_spec_["input_size"] < 32  # the small images set the size for all ...
    assert any("set by the smallest image(s) (20 px" in w  # ... and the user is told
               for w in model.training_info_["warnings"])
    # one small image among 97 (≤ 5%) is left out instead of shrinking every crop
    one = ProbeAttributor(backbone=str(ckpt), grid=[1.0], layer=-1, cache=False)
    one.fit([*big, small[0]], [*toy_data["trl"], toy_data["trl"][0]], val, toy_data["val"])
    assert one.backbone_spec_["input_size"] == 48 and one.min_size == 48
    assert one.fit_used_ == (list(range(len(big))), list(range(len(val))))  # not the small one
    [warning] = one.training_info_["warnings"]
    assert warning.startswith("1 image(s) with a side under 48 px (the smallest: 20 px) were "
                              "left out")
    # ... unless it is all a source has: then it is kept and sets the size
    lone = ProbeAttributor(backbone=str(ckpt), grid=[1.0], layer=-1, cache=False)
    lone.fit([*big, small[0]], [*toy_data["trl"], "tiny"], [*val, small[1]],
             [*toy_data["val"], "tiny"])
    assert lone.backbone_spec_["input_size"] < 32
