"""genprint's own forensic embedding network (backbone ``forensic-cnn``).

A compact CNN for low-level source traces, in the MISLNet family of camera-forensics networks:

1. a **constrained convolution** (Bayar & Stamm): every kernel slice is a prediction-error filter,
   its centre tap fixed at −1 and its other taps summing to 1, so the layer outputs "pixel minus a
   learned prediction of it from its neighbours" and suppresses scene content. The constraint is
   enforced at construction and by :meth:`ForensicCNN.constrain`, which the training loop calls
   after every optimiser step;
2. a stem convolution and three residual stages (the 2nd and 3rd halve the resolution; there is
   no pooling before them, so periodic traces survive the first stage);
3. global average pooling and a linear projection to an L2-normalised embedding.

Input: patches N×3×S×S in [0, 1] (``S`` = ``patch_size``; images are cropped or tiled to it,
never resized). :meth:`ForensicCNN.forward_features` returns the pooled features of every stage
and the embedding (so a probe can use this network as one more backbone); :meth:`embed` returns
the normalised embedding only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genprint.backbones.base import BACKBONES, Backbone, Preprocessing

BACKBONE_NAME = "forensic-cnn"


@dataclass(frozen=True)
class ForensicCNNConfig:
    """Architecture of a :class:`ForensicCNN` (stored in cards, so a saved network rebuilds)."""

    embedding_dim: int = 128
    patch_size: int = 32
    width: int = 16
    """Channels of the first stage; the next stages have 2× and 4× as many."""
    blocks: int = 1
    """Residual blocks per stage."""
    constrained_filters: int = 6
    kernel_size: int = 5
    """Side of the constrained (prediction-error) kernels; odd."""

    def to_dict(self) -> dict[str, int]:
        """The configuration as a plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ForensicCNNConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys are an error)."""
        fields = set(cls.__dataclass_fields__)
        extra = sorted(set(raw) - fields)
        if extra:
            raise ValueError(f"unknown forensic-cnn settings: {', '.join(extra)}")
        return cls(**{k: int(v) for k, v in raw.items()})


class ConstrainedConv2d(nn.Conv2d):
    """A convolution whose kernels are prediction-error filters (centre −1, others sum to 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        if kernel_size % 2 != 1 or kernel_size < 3:
            raise ValueError(f"constrained kernels need an odd size ≥ 3, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                         bias=False)
        self.constrain()

    @torch.no_grad()
    def constrain(self) -> None:
        """Impose the constraint on every (out, in) kernel slice, in place.

        The off-centre taps are divided by their sum (Bayar & Stamm's renormalisation). When that
        sum is tiny next to the taps' magnitudes (under 1% of Σ|w|: dividing would blow the taps
        up), the slice is instead shifted by a constant so that the taps sum to 1 (the nearest
        point satisfying the constraint); an all-zero slice so becomes the uniform predictor.
        """
        w = self.weight
        c = self.kernel_size[0] // 2
        w[:, :, c, c] = 0.0
        total = w.sum(dim=(2, 3), keepdim=True)
        magnitude = w.abs().sum(dim=(2, 3), keepdim=True)
        degenerate = total.abs() <= 1e-2 * magnitude + 1e-12
        n_off = w.shape[2] * w.shape[3] - 1
        shifted = w + (1.0 - total) / n_off
        safe_total = torch.where(degenerate, torch.ones_like(total), total)
        w.copy_(torch.where(degenerate, shifted, w / safe_total))
        w[:, :, c, c] = -1.0


class _ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ForensicCNN(Backbone):
    """Constrained-convolution residual CNN with an L2-normalised embedding (see module doc)."""

    name = BACKBONE_NAME
    dynamic_input = True
    """Fully convolutional with global pooling: any input side (multiple of 4) runs."""

    def __init__(self, config: ForensicCNNConfig | None = None) -> None:
        super().__init__()
        self.config = config or ForensicCNNConfig()
        cfg = self.config
        self.preprocessing = Preprocessing(
            input_size=cfg.patch_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop="tiles",
            extra={"architecture": cfg.to_dict(), "size_multiple": 4, "min_size": 8,
                   "note": "non-overlapping tiles, never resized; tile embeddings averaged"},
        )
        self.constrained = ConstrainedConv2d(3, cfg.constrained_filters, cfg.kernel_size)
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.constrained_filters, cfg.width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cfg.width), nn.ReLU(inplace=True))
        widths = [cfg.width, 2 * cfg.width, 4 * cfg.width]
        stages = []
        c_in = cfg.width
        for i, c_out in enumerate(widths):
            blocks = [_ResidualBlock(c_in if b == 0 else c_out, c_out,
                                     2 if (i > 0 and b == 0) else 1) for b in range(cfg.blocks)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.project = nn.Linear(widths[-1], cfg.embedding_dim)

    @property
    def embedding_dim(self) -> int:
        """Dimension of the embedding."""
        return self.config.embedding_dim

    def constrain(self) -> None:
        """Re-impose the prediction-error constraint on the first layer (after each step)."""
        self.constrained.constrain()

    def layer_names(self) -> list[str]:
        return [f"stage{i + 1}" for i in range(len(self.stages))] + ["embedding"]

    def _stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(self.constrained(self.normalise(x)))
        maps = []
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps

    def raw_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before L2 normalisation (what a classification head sees)."""
        return self.project(self._stage_maps(x)[-1].mean(dim=(2, 3)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings (N×embedding_dim) of patches N×3×S×S in [0, 1]."""
        return F.normalize(self.raw_embedding(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self._stage_maps(x)
        pooled = [m.mean(dim=(2, 3)) for m in maps]
        return [*pooled, F.normalize(self.project(pooled[-1]), dim=1)]

    def card(self) -> dict[str, Any]:
        return {**super().card(), "architecture": self.config.to_dict()}


def patches_to_tensor(patches: Any) -> torch.Tensor:
    """(N, S, S, 3) uint8 patches (numpy) → N×3×S×S float tensor in [0, 1]."""
    t = torch.from_numpy(patches).permute(0, 3, 1, 2)
    return t.float().div_(255.0).contiguous()


def load_weights(net: ForensicCNN, path: str) -> dict[str, Any]:
    """Load a network's weights from a camera checkpoint or a ``metric`` model directory.

    The stored architecture must equal ``net``'s (the patch size may differ: it sets only how
    images are cut, not the weights). Returns the directory's card.
    """
    from genprint.storage.model_dir import ModelFormatError, read_model_dir

    contents = read_model_dir(path)
    arch = contents.card.get("backbone", {}).get("architecture")
    if arch is None:
        raise ModelFormatError(f"{path}: no forensic-cnn architecture in its card")
    stored = replace(ForensicCNNConfig.from_dict(arch), patch_size=net.config.patch_size)
    if stored != net.config:
        raise ValueError(f"{path}: architecture {arch} differs from the requested "
                         f"{net.config.to_dict()}")
    state = {k[len("net."):]: torch.from_numpy(v.copy()) for k, v in contents.tensors.items()
             if k.startswith("net.")}
    net.load_state_dict(state)
    net.constrain()
    return contents.card


def state_tensors(net: ForensicCNN) -> dict[str, Any]:
    """The network's state as numpy arrays named ``net.<parameter>`` (for safetensors)."""
    return {f"net.{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}


SHIPPED_WEIGHTS = "camera"
"""``weights`` value naming the shipped camera checkpoint (the default)."""
RANDOM_WEIGHTS = "random"
"""``weights`` value for a randomly initialised network (seeded: the same one every time)."""


@BACKBONES.register(BACKBONE_NAME)
def forensic_cnn(embedding_dim: int = 128, patch_size: int = 32, width: int = 16, blocks: int = 1,
                 constrained_filters: int = 6, kernel_size: int = 5,
                 weights: str | None = SHIPPED_WEIGHTS, input_size: int | None = None,
                 seed: int = 0) -> ForensicCNN:
    """Factory of the ``forensic-cnn`` backbone (a frozen feature extractor, e.g. for ``probe``).

    ``weights``: ``"camera"`` (default) the camera-identification checkpoint shipped with
    genprint (``genprint pretrain camera``), or the path of a camera checkpoint or ``metric``
    model directory; the checkpoint's architecture is then used and the other architecture
    settings are ignored (None means the default). ``"random"``: a network of the given
    architecture, initialised at random from ``seed`` (the same network every time, so a model
    fitted on its features can be loaded again; a baseline of untrained forensic features).
    ``input_size``
    (the registry's common name for the crop side) overrides ``patch_size``.
    """
    if weights is None or weights == SHIPPED_WEIGHTS:
        from genprint.methods.camera_pretrain import default_camera_checkpoint

        shipped = default_camera_checkpoint()
        if shipped is None:
            raise ValueError("the shipped camera checkpoint of forensic-cnn is missing (build it "
                             "with `genprint pretrain camera`); give weights=PATH, or "
                             "weights='random' for an untrained network")
        weights = str(shipped)
    if weights != RANDOM_WEIGHTS:
        from genprint.storage.model_dir import read_card

        arch = read_card(weights).get("backbone", {}).get("architecture")
        if arch is None:
            raise ValueError(f"{weights}: no forensic-cnn architecture in its card")
        config = ForensicCNNConfig.from_dict(arch)
        if input_size is not None:
            config = replace(config, patch_size=input_size)
        net = ForensicCNN(config)
        load_weights(net, weights)
        return net.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ForensicCNN(ForensicCNNConfig(embedding_dim, input_size or patch_size, width,
                                            blocks, constrained_filters, kernel_size))
    return net.eval()
