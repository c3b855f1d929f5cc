"""Fitting a probe in two passes over the files: the model of a fit on the decoded images,
pixels decoded a chunk at a time, and a file that changes between the passes stops the fit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genprint.io.batches import load_items
from genprint.io.sources import Item
from genprint.methods import two_pass
from genprint.methods.fitting import fit_on_items
from genprint.methods.probe import ProbeAttributor
from tests.backbones.user_checkpoints import save_open_clip_checkpoint
from tests.conftest import textured

pytest.importorskip("faiss")


@pytest.fixture
def files(tmp_path: Path) -> tuple[list[Item], list[Item], Path]:
    """Three toy sources (20 training, 6 validation 36×40 PNGs each) and a tiny checkpoint."""
    rng = np.random.default_rng(0)
    train, val = [], []
    for name, period in (("alpha", 2), ("beta", 3), ("gamma", 5)):
        (tmp_path / name).mkdir()
        for i in range(26):
            path = tmp_path / name / f"{i:02d}.png"
            Image.fromarray(textured(rng, 36, 40, period)).save(path)
            (train if i < 20 else val).append(Item(path, name, "train" if i < 20 else "val"))
    return train, val, save_open_clip_checkpoint(tmp_path / "clip.pt")


def probe(ckpt: Path, **kw: object) -> ProbeAttributor:
    return ProbeAttributor(backbone=str(ckpt), grid=[0.1, 10.0], cache=False, **kw)


def test_two_passes_give_the_fit_on_decoded_images(files: tuple, monkeypatch) -> None:
    train, val, ckpt = files
    chunks: list[int] = []
    original = ProbeAttributor.extract

    def counting(self, images, *args, **kwargs):  # type: ignore[no-untyped-def]
        chunks.append(len(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(ProbeAttributor, "extract", counting)
    model = probe(ckpt, batch_size=4, per_class=15)
    read: list[int] = []
    assert fit_on_items(model, train, val, on_read=read.append, keep_decoded_bytes=0) == []
    assert sum(read) == 78
    # pixels were decoded FEATURE_CHUNK_BATCHES batches at a time, never all at once
    assert max(chunks) == 4 * two_pass.FEATURE_CHUNK_BATCHES and sum(chunks) == 45 + 18
    # pixels kept from the first pass (the default budget holds these 78 images) are used
    # as they are: the same model
    kept = probe(ckpt, batch_size=4, per_class=15)
    fit_on_items(kept, train, val)
    assert kept.fit_used_ == model.fit_used_
    assert np.array_equal(kept.thresholds_, model.thresholds_)

    chunks.clear()
    tr_imgs, _, _ = load_items([i.path for i in train])
    va_imgs, _, _ = load_items([i.path for i in val])
    direct = probe(ckpt, batch_size=4, per_class=15).fit(
        tr_imgs, [i.source for i in train], va_imgs, [i.source for i in val])
    assert chunks == [45, 18]  # the array API extracts each split whole
    assert model.fit_used_ == direct.fit_used_
    assert model.layer_name_ == direct.layer_name_ and model.probe_.hp == direct.probe_.hp
    # the splits are batched apart, as the array fit batches them: the same model to the bit
    assert np.array_equal(model.thresholds_, direct.thresholds_)
    assert model.training_info_["n_train"] == 45 and model.training_info_["n_val"] == 18
    assert len(model.training_fingerprints_) == 63


def test_a_file_changed_between_the_passes_stops_the_fit(files: tuple) -> None:
    train, val, ckpt = files
    victim = train[3].path

    decoded = 36 * 40 * 3
    for keep, change, message in (
            (0, lambda: Image.fromarray(textured(np.random.default_rng(9), 36, 40, 2)).save(
                victim), "has other pixels in the second pass over the data than in the first"),
            # the victim is not among the images kept from the first pass
            (3 * decoded, lambda: victim.write_bytes(b""),
             r"was read in the first pass over the data but not in the second \(.*empty")):
        model = probe(ckpt)
        first, featurise = two_pass.local_passes(model, model.min_size, keep_bytes=keep)

        def read_then_change(paths: Sequence[Path], first=first, change=change) -> list:
            out = first(paths)
            change()
            return out

        with pytest.raises(two_pass.FilesChangedError, match=message):
            two_pass.fit_in_two_passes(model, train, val, read_then_change, featurise)


@pytest.mark.parametrize("where", ["train twice", "train and val", "val twice"])
def test_a_file_listed_twice_is_read_as_often_with_or_without_kept_pixels(
        files: tuple, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path twice among the items (kept pixels are served to both, the others read
    again for both) gives the fit on decoded images; kept pixels are not decoded again."""
    from genprint.io import batches

    train, val, ckpt = files
    if where == "train twice":
        train = [*train, train[0], train[1]]
    elif where == "train and val":
        val = [*val, Item(train[0].path, train[0].source, "val")]
    else:
        val = [*val, val[0]]
    tr_imgs, _, _ = load_items([i.path for i in train])
    va_imgs, _, _ = load_items([i.path for i in val])
    direct = probe(ckpt).fit(tr_imgs, [i.source for i in train], va_imgs,
                             [i.source for i in val])
    decoded: list[int] = []
    original = batches.iter_images

    def counting(paths, *args, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(len(paths))
        return original(paths, *args, **kwargs)

    monkeypatch.setattr(batches, "iter_images", counting)
    for keep in (0, two_pass.KEEP_DECODED_BYTES):
        decoded.clear()
        model = probe(ckpt)
        assert fit_on_items(model, train, val, keep_decoded_bytes=keep) == []
        assert model.fit_used_ == direct.fit_used_
        assert np.array_equal(model.thresholds_, direct.thresholds_)
        n = len(train) + len(val)
        assert decoded == ([n, n] if keep == 0 else [n, 0])  # kept: every file decoded once


def test_one_feature_cache_per_fit(files: tuple, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks share one cache object: opening a cache reads every shard's keys, so one per
    chunk made a fit on a large cache slow."""
    from genprint.backbones import features

    train, val, ckpt = files
    opened: list[int] = []
    original = features.FeatureCache.__init__

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(features.FeatureCache, "__init__", counting)
    model = ProbeAttributor(backbone=str(ckpt), grid=[1.0], batch_size=4,
                            cache_dir=str(tmp_path / "cache"))
    fit_on_items(model, train, val, keep_decoded_bytes=0)
    assert len(opened) == 1
