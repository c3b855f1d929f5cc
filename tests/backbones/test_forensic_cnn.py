"""The forensic CNN backbone: constrained first layer, registry entry, features and embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genprint.backbones import get_backbone
from genprint.backbones.base import BACKBONES, _ensure_builtin_backbones
from genprint.backbones.forensic_cnn import ConstrainedConv2d, ForensicCNN, ForensicCNNConfig
from genprint.methods.metric_train import optimise

TINY = ForensicCNNConfig(embedding_dim=16, width=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_constrained(layer: ConstrainedConv2d) -> None:
    w = layer.weight.detach()
    c = layer.kernel_size[0] // 2
    torch.testing.assert_close(w[:, :, c, c], torch.full_like(w[:, :, c, c], -1.0))
    off_centre = w.sum(dim=(2, 3)) - w[:, :, c, c]
    torch.testing.assert_close(off_centre, torch.ones_like(off_centre), atol=1e-5, rtol=1e-5)


def test_registered_with_tiles_preprocessing() -> None:
    _ensure_builtin_backbones()
    assert "forensic-cnn" in BACKBONES
    net = get_backbone("forensic-cnn", patch_size=48, embedding_dim=16, width=4,
                       weights="random")
    assert net.preprocessing.input_size == 48 and net.preprocessing.crop == "tiles"
    card = net.card()
    assert card["name"] == "forensic-cnn" and card["architecture"]["patch_size"] == 48
    # a random network is the same one every time (a model fitted on it loads again), and
    # the default is the shipped camera checkpoint, never an untrained network
    again = get_backbone("forensic-cnn", patch_size=48, embedding_dim=16, width=4,
                         weights="random")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 again.state_dict().values(), strict=True))
    from genprint.methods.camera_pretrain import default_camera_checkpoint

    shipped = get_backbone("forensic-cnn")
    assert not shipped.training
    assert shipped.card()["architecture"] == get_backbone(
        "forensic-cnn", weights=str(default_camera_checkpoint())).card()["architecture"]
    assert all(torch.equal(a, b) for a, b in zip(
        shipped.state_dict().values(),
        get_backbone("forensic-cnn", weights=str(default_camera_checkpoint())).state_dict()
        .values(), strict=True))


def test_constraint_holds_at_construction_and_after_optimiser_steps() -> None:
    torch.manual_seed(0)
    net = ForensicCNN(TINY)
    assert_constrained(net.constrained)
    # a raw optimiser step breaks the constraint; constrain() restores it
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    net(torch.rand(4, 3, 32, 32)).sum().backward()
    opt.step()
    with pytest.raises(AssertionError):
        assert_constrained(net.constrained)
    net.constrain()
    assert_constrained(net.constrained)
    # the training loop re-imposes it after every step
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (36, 40, 3), dtype=np.uint8) for _ in range(8)]
    labels = np.array([0, 1] * 4)
    head = torch.nn.Linear(16, 2)
    ce = torch.nn.CrossEntropyLoss()
    optimise(net, lambda x, y: ce(head(net.raw_embedding(x)), y), list(head.parameters()),
             images, labels, epochs=2, batch_size=4, lr=0.5, weight_decay=0.0, extra_lr_mult=1.0,
             crops_per_image=1, seed=0)
    assert_constrained(net.constrained)


def test_degenerate_kernel_is_reset_to_the_uniform_predictor() -> None:
    layer = ConstrainedConv2d(3, 2, 3)
    with torch.no_grad():
        layer.weight.zero_()
    layer.constrain()
    assert_constrained(layer)
    torch.testing.assert_close(layer.weight[0, 0, 0, 0], torch.tensor(1 / 8))


def test_constrained_layer_removes_flat_content() -> None:
    layer = ConstrainedConv2d(3, 4, 5)
    out = layer(torch.full((1, 3, 16, 16), 0.7))
    interior = out[..., 2:-2, 2:-2]  # away from the zero padding
    assert interior.abs().max() < 1e-5


def test_features_of_every_stage_and_unit_embedding() -> None:
    net = ForensicCNN(TINY).eval()
    x = torch.rand(5, 3, 32, 32)
    feats = net.forward_features(x)
    assert len(feats) == len(net.layer_names()) == 4
    assert [f.shape[1] for f in feats] == [4, 8, 16, 16]
    emb = net.embed(x)
    torch.testing.assert_close(emb, feats[-1])
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))


def test_config_round_trip_refuses_unknown_settings() -> None:
    assert ForensicCNNConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown"):
        ForensicCNNConfig.from_dict({**TINY.to_dict(), "depth": 3})


def test_weights_from_a_camera_checkpoint(tmp_path) -> None:
    from genprint.methods.camera_pretrain import pretrain_camera, save_camera_checkpoint

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    pre = pretrain_camera(images, ["a", "b"] * 2, images, ["a", "b"] * 2, config=TINY, epochs=1,
                          batch_size=4)
    save_camera_checkpoint(pre, tmp_path / "ckpt")
    net = get_backbone("forensic-cnn", weights=str(tmp_path / "ckpt"))
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(net.embed(x), pre.net.eval().embed(x))
    wide = get_backbone("forensic-cnn", weights=str(tmp_path / "ckpt"), input_size=64)
    assert wide.preprocessing.input_size == 64  # same weights, larger tiles
    torch.testing.assert_close(wide.embed(x), net.embed(x))
