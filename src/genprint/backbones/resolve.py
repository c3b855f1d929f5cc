"""From a backbone name or a local path to a :class:`Backbone`, and the size it should run at.

:func:`resolve_backbone` accepts:

* a registered name (``dinov2-s14-onnx``, ``efficientnet-lite0``, ``forensic-cnn``, ...);
* a transformers model folder, a Hugging Face cache entry, or a repository id found in the local
  cache (see :mod:`genprint.backbones.hf_vision`);
* an open_clip checkpoint file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.safetensors``; see
  :mod:`genprint.backbones.open_clip_ckpt`), with ``model_name`` (e.g. ``ViT-B-16-quickgelu``)
  given or left to be inferred from the tensors.

Nothing is fetched from the network. :func:`backbone_for_images` also picks the input size for a
given smallest image side when none is given (:func:`genprint.backbones.common.fit_input_size`).
"""

from __future__ import annotations

import inspect
import numbers
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from genprint.backbones.base import BACKBONES, Backbone, _ensure_builtin_backbones
from genprint.backbones.common import fit_input_size, size_rules

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered backbone (built-in modules are imported first)."""
    _ensure_builtin_backbones()
    return name in BACKBONES


def resolve_path(name_or_path: str, **kwargs: Any) -> Backbone:
    """A backbone from a local path or a cached Hugging Face repository id."""
    from genprint.backbones.hf_vision import HFVisionBackbone, find_hf_model

    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ValueError(f"{path}: not a checkpoint file (expected one of "
                             f"{', '.join(CHECKPOINT_SUFFIXES)})")
        from genprint.backbones.open_clip_ckpt import OpenClipBackbone

        return OpenClipBackbone(path, **kwargs)
    if find_hf_model(name_or_path) is not None:
        unknown = sorted(set(kwargs) - {"input_size"})
        if unknown:
            raise ValueError(f"transformers backbones take no option(s) {', '.join(unknown)}")
        return HFVisionBackbone(name_or_path, **kwargs)
    if path.exists():
        raise ValueError(f"{path}: neither a checkpoint file nor a transformers model folder")
    known = ", ".join(BACKBONES.names()) or "(none)"
    from genprint.plugins import PLUGIN_HINT

    raise ValueError(f"unknown backbone {name_or_path!r}: not a registered name ({known}), an "
                     "existing local path, nor a repository id in the local Hugging Face "
                     f"cache; {PLUGIN_HINT}")


def resolve_backbone(name_or_path: str, **kwargs: Any) -> Backbone:
    """Build a backbone from a registered name or a local path (see module doc).

    ``kwargs`` go to the factory; ``input_size=None`` entries are dropped, so every backbone
    gets its default.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "input_size" in kwargs:
        size = kwargs["input_size"]
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"the input size must be a whole number of pixels ≥ 1, got "
                             f"{size!r}")
        kwargs["input_size"] = int(size)
    if is_registered(name_or_path):
        factory = BACKBONES.get(name_or_path)
        params = inspect.signature(factory).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        if "input_size" in kwargs and "input_size" not in params and not takes_any:
            kwargs.pop("input_size")  # a fixed-size backbone
        unknown = sorted(k for k in kwargs if k not in params) if not takes_any else []
        if unknown:
            raise ValueError(
                f"backbone {name_or_path!r} takes no option {', '.join(unknown)}"
                + (" (--backbone-model is for open_clip checkpoint files)"
                   if "model_name" in unknown else ""))
        return factory(**kwargs)
    return resolve_path(name_or_path, **kwargs)


def backbone_for_images(name_or_path: str, min_side: int | None,
                        input_size: int | None = None, **kwargs: Any) -> Backbone:
    """A backbone at ``input_size``, or at the largest valid size for images ≥ ``min_side``."""
    backbone = resolve_backbone(name_or_path, input_size=input_size, **kwargs)
    if input_size is not None and backbone.preprocessing.input_size != int(input_size):
        raise ValueError(f"backbone {name_or_path!r} takes {backbone.preprocessing.input_size}-px "
                         f"inputs only, not {input_size} (it has no input-size option)")
    if input_size is not None or min_side is None:
        return backbone
    size = fit_input_size(*size_rules(backbone.preprocessing), min_side)
    if size == backbone.preprocessing.input_size:
        return backbone
    if getattr(backbone, "dynamic_input", False):  # any valid size runs: no need to rebuild
        backbone.preprocessing = replace(backbone.preprocessing, input_size=size)
        return backbone
    rebuilt = resolve_backbone(name_or_path, input_size=size, **kwargs)
    if rebuilt.preprocessing.input_size > min_side:  # a backbone of one fixed input size
        raise ValueError(f"backbone {name_or_path!r} takes {rebuilt.preprocessing.input_size}-px "
                         f"inputs only, larger than the smallest image ({min_side} px; images "
                         "are never upsampled): use --pad reflect, or larger images")
    return rebuilt


def weights_id(backbone: Backbone) -> str:
    """The identity of a backbone's weights: its ``weights_id`` or a hash of its tensors.

    The hash sees only ``state_dict()``. A backbone whose output depends on anything else —
    weights kept outside its parameters and buffers (an ONNX session, numpy arrays), or
    settings read from the environment — must set ``weights_id`` to something that changes
    with them; otherwise cached features and the check of a saved model cannot see the
    change."""
    given = getattr(backbone, "weights_id", None)
    if isinstance(given, str) and given:
        return given
    from genprint.storage.model_dir import tensors_sha256

    return tensors_sha256(sorted(backbone.state_dict().items()))


def spec_path(name_or_path: str) -> str:
    """What a model card stores for a backbone: the name, or an absolute path."""
    if is_registered(name_or_path):
        return name_or_path
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else os.fspath(name_or_path)
