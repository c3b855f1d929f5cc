"""The backbone contract and registry.

A :class:`Backbone` is a frozen (or trainable, for genprint's own forensic CNN) torch module that
takes a batch of images **already cropped to its input size** (N×3×S×S, float in [0, 1]) and
returns one feature tensor per block (``layer_names()``), each N×D_l: the CLS token for
transformers, the globally pooled map for CNNs. Its :class:`Preprocessing` says how images are
prepared: crop size (images are centre-cropped or tiled, never resized), normalisation mean/std
applied inside the backbone.

Registry entries are *factories*: ``BACKBONES.get(name)(**kwargs) -> Backbone``. A name may also
be a local path (an open_clip checkpoint, a Hugging Face model directory); :func:`get_backbone`
resolves both. Built-in modules are listed in :data:`BUILTIN_BACKBONE_MODULES` and imported on
first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from genprint.registry import Registry


@dataclass(frozen=True)
class Preprocessing:
    """How images reach a backbone; stored in model cards so a saved model is self-describing."""

    input_size: int
    """Crop / tile side in pixels (images smaller than this are refused, never upsampled)."""
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop: str = "center"
    """``center`` (one centre crop per image) or ``tiles`` (non-overlapping tiles, aggregated)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backbone(nn.Module):
    """Base class of feature extractors (see module doc)."""

    name: str = ""
    preprocessing: Preprocessing
    weights_id: str | None = None
    """Identity of the weights (the key of cached features, checked when a saved model loads).
    ``None``: a hash of :meth:`state_dict`. Set it when the output depends on anything else —
    weights outside the parameters and buffers, settings from the environment — so that a
    change of those is seen (:func:`genprint.backbones.resolve.weights_id`)."""
    dynamic_input: bool = False
    """Whether the backbone runs at any valid input size without being rebuilt; if not, its
    factory's ``input_size`` builds it at another size (a factory without one: a single
    size, and smaller images are refused)."""

    def layer_names(self) -> list[str]:
        """Names of the blocks whose features :meth:`forward_features` returns, in order."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every block for images N×3×S×S in [0, 1] (one N×D tensor per block)."""
        raise NotImplementedError

    def card(self) -> dict[str, Any]:
        """What a model card records about this backbone."""
        return {"name": self.name, "layers": self.layer_names(),
                "preprocessing": self.preprocessing.to_dict()}

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.preprocessing.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocessing.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


BackboneFactory = Callable[..., Backbone]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")
"""Every built-in backbone by name; entries are factories returning a :class:`Backbone`."""

BUILTIN_BACKBONE_MODULES: list[str] = [
    "genprint.backbones.forensic_cnn",
    "genprint.backbones.dinov2_onnx",
    "genprint.backbones.efficientnet_lite",
]
"""Modules that register built-in backbones when imported (appended to by each method's work)."""


def _ensure_builtin_backbones() -> None:
    for module in BUILTIN_BACKBONE_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional extra is missing: its backbones are simply absent
            continue


def get_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name``, or load one from a local path.

    Paths (open_clip checkpoint files, transformers model folders or Hugging Face cache entries)
    are handled by :func:`genprint.backbones.resolve.resolve_path`; an unknown name gets an error
    listing the registered ones.
    """
    _ensure_builtin_backbones()
    if name in BACKBONES:
        return BACKBONES.get(name)(**kwargs)
    from genprint.backbones.resolve import resolve_path

    return resolve_path(name, **kwargs)
