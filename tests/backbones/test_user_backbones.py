"""User CLIP / DINOv2 weights from local files: open_clip checkpoints and transformers folders."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genprint.backbones import get_backbone
from genprint.backbones.resolve import backbone_for_images, resolve_backbone
from tests.backbones.user_checkpoints import (
    save_hf_clip,
    save_hf_dinov2,
    save_open_clip_checkpoint,
)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a backbone tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def reference_open_clip(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int,
                        quickgelu: bool) -> list[torch.Tensor]:
    """open_clip's ViT written out plainly (CLS after each block), to check genprint's port."""
    sd = {k.removeprefix("module.visual."): v for k, v in sd.items()
          if k.startswith("module.visual.")}
    w = sd["conv1.weight"]
    tok = F.conv2d(x, w, stride=w.shape[-1]).flatten(2).transpose(1, 2)
    h = torch.cat([sd["class_embedding"].expand(len(x), 1, -1), tok], 1)
    h = h + sd["positional_embedding"]
    h = F.layer_norm(h, h.shape[-1:], sd["ln_pre.weight"], sd["ln_pre.bias"])
    out, k = [], 0
    while f"transformer.resblocks.{k}.ln_1.weight" in sd:
        p = f"transformer.resblocks.{k}."
        a = F.layer_norm(h, h.shape[-1:], sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        q, kk, v = (a @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, -1)
        n, t, d = q.shape
        q, kk, v = (z.view(n, t, heads, d // heads).transpose(1, 2) for z in (q, kk, v))
        att = torch.softmax(q @ kk.transpose(-1, -2) / (d // heads) ** 0.5, -1)
        o = (att @ v).transpose(1, 2).reshape(n, t, d)
        h = h + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        m = F.layer_norm(h, h.shape[-1:], sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        m = m @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m) if quickgelu else F.gelu(m)
        h = h + m @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
        out.append(h[:, 0])
        k += 1
    return out


@pytest.mark.parametrize("quickgelu", [False, True])
def test_open_clip_checkpoint_matches_reference(tmp_path: Path, quickgelu: bool) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "epoch_3.pt", width=128, layers=2,
                                     quickgelu=quickgelu)
    name = "ViT-tiny-quickgelu" if quickgelu else "ViT-tiny"
    backbone = get_backbone(str(ckpt), model_name=name)
    assert backbone.layer_names() == ["block0", "block1"]
    assert backbone.preprocessing.input_size == 32
    x = torch.rand(3, 3, 32, 32)
    ours = backbone.forward_features(x)
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    ref = reference_open_clip(sd, backbone.normalise(x), heads=2, quickgelu=quickgelu)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == (3, 128)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_open_clip_smaller_input_and_errors(tmp_path: Path) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "ck.pt")
    small = backbone_for_images(str(ckpt), min_side=20)  # 16: largest multiple of 8 that fits
    assert small.preprocessing.input_size == 16
    assert small.forward_features(torch.rand(2, 3, 16, 16))[1].shape == (2, 64)
    with pytest.raises(ValueError, match="too small"):
        backbone_for_images(str(ckpt), min_side=7)
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"visual.layer1.0.conv1.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="ModifiedResNet"):
        get_backbone(str(bad))
    with pytest.raises(ValueError, match="act"):
        get_backbone(str(ckpt), act="relu")


@pytest.mark.parametrize("vision_only", [False, True])
def test_transformers_clip_folder(tmp_path: Path, vision_only: bool) -> None:
    pytest.importorskip("transformers")
    from transformers import CLIPVisionModel

    folder = save_hf_clip(tmp_path / "clip", vision_only=vision_only)
    backbone = backbone_for_images(str(folder), min_side=32)
    assert backbone.layer_names() == ["layer1", "layer2", "layer3"]
    assert backbone.preprocessing.input_size == 32
    x = torch.rand(2, 3, 32, 32)
    feats = backbone.forward_features(x)
    ref = CLIPVisionModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = ref(pixel_values=backbone.normalise(x), output_hidden_states=True).hidden_states
    for k, f in enumerate(feats):
        torch.testing.assert_close(f, hidden[k + 1][:, 0])
    small = backbone_for_images(str(folder), min_side=16)  # interpolated position embedding
    assert small.forward_features(torch.rand(1, 3, 16, 16))[0].shape == (1, 32)


def test_transformers_dinov2_folder_and_cache_entry(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    folder = save_hf_dinov2(tmp_path / "dino")
    backbone = resolve_backbone(str(folder), input_size=28)
    assert len(backbone.forward_features(torch.rand(2, 3, 28, 28))) == 2
    # the same weights as a Hugging Face cache entry, found by path and by repository id
    cache = tmp_path / "hub"
    entry = cache / "models--acme--tiny-dino"
    shutil.copytree(folder, entry / "snapshots" / "abc123")
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    by_entry = resolve_backbone(str(entry), input_size=28)
    by_id = resolve_backbone("acme/tiny-dino", input_size=28)
    x = torch.rand(1, 3, 28, 28)
    torch.testing.assert_close(by_entry.forward_features(x)[1], by_id.forward_features(x)[1])
    assert by_id.weights_id == backbone.weights_id  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown backbone"):
        resolve_backbone("acme/not-cached")


def test_a_model_name_that_contradicts_the_tensors_is_refused(tmp_path: Path) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "tiny.pt")  # width 64, patch 8
    with pytest.raises(ValueError, match="says patch 16, width 768.*tensors say patch 8"):
        get_backbone(str(ckpt), model_name="ViT-B-16-quickgelu")
    assert get_backbone(str(ckpt), model_name="ViT-tiny-quickgelu").config["quickgelu"]


@pytest.mark.parametrize(("width", "heads"), [(768, 12), (1024, 16), (1280, 16), (1408, 16),
                                              (1664, 16), (1792, 16)])
def test_open_clip_head_counts_of_the_large_towers(width: int, heads: int) -> None:
    """open_clip's ViT-H (width 1280) has head width 80, so 16 heads, not 1280 // 64 = 20;
    ViT-g, ViT-bigG and ViT-e have 16 too. Only shapes are read (meta tensors)."""
    from genprint.backbones.open_clip_ckpt import tower_config

    meta = {"device": "meta"}
    sd = {"visual.conv1.weight": torch.empty(width, 3, 14, 14, **meta),
          "visual.positional_embedding": torch.empty(257, width, **meta),
          "visual.transformer.resblocks.0.ln_1.weight": torch.empty(width, **meta),
          "visual.transformer.resblocks.0.mlp.c_fc.weight": torch.empty(4 * width, width,
                                                                         **meta)}
    assert tower_config(sd, quickgelu=False)["heads"] == heads


def test_a_truncated_or_corrupt_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    ckpt = save_open_clip_checkpoint(tmp_path / "ck.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[:2000])
    junk_pt, junk_st = tmp_path / "junk.pt", tmp_path / "junk.safetensors"
    junk_pt.write_bytes(b"not a checkpoint at all")
    junk_st.write_bytes(b"\xff" * 64)
    for path in (cut, junk_pt, junk_st):
        with pytest.raises(ValueError, match="not a readable checkpoint"):
            get_backbone(str(path))
    # a sound checkpoint that also pickles other objects: said so, with the type
    import argparse

    extra = tmp_path / "extra.pt"
    torch.save({"state_dict": torch.load(ckpt, weights_only=True)["state_dict"],
                "args": argparse.Namespace(lr=1)}, extra)
    with pytest.raises(ValueError, match=r"holds objects other than tensors "
                                         r"\(argparse.Namespace\).*state dict alone"):
        get_backbone(str(extra))
    for heads in (0, 3, True):  # a head count must divide the width (64)
        with pytest.raises(ValueError, match="heads must be a whole number"):
            get_backbone(str(ckpt), heads=heads)


def test_a_transformers_folder_with_a_broken_config_is_refused_clearly(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    folder = save_hf_clip(tmp_path / "clip", vision_only=True)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="its config.json cannot be read"):
        resolve_backbone(str(folder))


def test_a_model_whose_backbone_is_now_built_otherwise_is_refused() -> None:
    """Same weights, another architecture (an older genprint's head count for ViT-H): the
    features would differ, so the saved probe is refused."""
    from genprint.methods.probe import _check_same_architecture
    from genprint.storage.model_dir import ModelFormatError

    def card(heads: int) -> dict:
        return {"preprocessing": {"extra": {"architecture": {"width": 1280, "heads": heads}}}}

    _check_same_architecture("vit-h.pt", card(16), card(16))
    _check_same_architecture("cnn", {"preprocessing": {"extra": {}}}, card(16))  # none kept
    with pytest.raises(ModelFormatError, match=r"heads 20 → 16.*Retrain"):
        _check_same_architecture("vit-h.pt", card(20), card(16))


def test_backbone_options_a_backbone_does_not_take_are_refused() -> None:
    """--backbone-model goes to open_clip checkpoint files; a registered backbone that takes
    no model name says so instead of a TypeError. An input size below 1 is refused."""
    with pytest.raises(ValueError, match="takes no option model_name .*open_clip"):
        resolve_backbone("efficientnet-lite0", model_name="ViT-B-16")
    for size in (0, -3, True, 16.0):
        with pytest.raises(ValueError, match="input size must be a whole number"):
            resolve_backbone("forensic-cnn", input_size=size)
    import numpy as np

    assert resolve_backbone("forensic-cnn", input_size=np.int64(16)).preprocessing.input_size == 16


def test_a_fixed_size_backbone_larger_than_the_images_is_refused_before_extraction() -> None:
    from genprint.backbones import BACKBONES
    from genprint.backbones.forensic_cnn import ForensicCNN, ForensicCNNConfig

    class Fixed(ForensicCNN):
        dynamic_input = False  # as a plugin's backbone that runs at one size only

    def fixed() -> ForensicCNN:  # no input_size parameter: always 64 px
        return Fixed(ForensicCNNConfig(16, 64, 4, 1, 3, 5)).eval()

    BACKBONES.add("fixed-64-test", fixed)
    try:
        with pytest.raises(ValueError, match="takes 64-px inputs only.*32 px.*--pad reflect"):
            backbone_for_images("fixed-64-test", min_side=32)
        assert backbone_for_images("fixed-64-test", min_side=64).preprocessing.input_size == 64
        with pytest.raises(ValueError, match="takes 64-px inputs only, not 32"):
            backbone_for_images("fixed-64-test", min_side=None, input_size=32)
    finally:
        BACKBONES.remove("fixed-64-test")


def test_a_weight_file_replaced_keeping_its_time_is_hashed_again(tmp_path: Path) -> None:
    """cp -p and rsync -t keep the modification time; the change time still moves."""
    import os

    from genprint.backbones.common import sha256_of_files

    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 100)
    before = sha256_of_files([path])
    stat = path.stat()
    other = tmp_path / "new.bin"
    other.write_bytes(b"b" * 100)
    os.replace(other, path)  # another file in its place (another inode)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    swapped = sha256_of_files([path])
    assert swapped != before
    stat = path.stat()
    path.write_bytes(b"c" * 100)  # rewritten in place, as cp -p does (same inode)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_ino == stat.st_ino and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sha256_of_files([path]) not in (before, swapped)
