"""CLIP and DINOv2 vision models in the Hugging Face transformers format, from local files only.

A user who already has weights points genprint at them:

* a model directory written by ``save_pretrained`` (``config.json`` + weights);
* an entry of the Hugging Face cache (``.../hub/models--openai--clip-vit-base-patch16``, or its
  ``snapshots/<commit>`` folder), or a repository id (``openai/clip-vit-base-patch16``) looked
  up in the local cache (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``).

Nothing is ever downloaded: ``HF_HUB_OFFLINE=1`` is set before transformers is imported by this
module and every load passes ``local_files_only=True``.

Model types: ``clip`` / ``clip_vision_model`` (vision tower of a CLIP checkpoint, via
``CLIPVisionModel``), ``dinov2`` (``Dinov2Model``); other ViT-like types go through ``AutoModel``
when their hidden states are token sequences. Features: the CLS token of the hidden state after
every layer (``output_hidden_states=True``; the embedding output is left out). Mean/std come
from ``preprocessor_config.json`` when present (CLIP's or ImageNet's otherwise); the native input
is the processor's crop size. Smaller inputs use position-embedding interpolation
(``interpolate_pos_encoding=True`` for CLIP; DINOv2 always interpolates).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from genprint.backbones.base import Backbone, Preprocessing
from genprint.backbones.common import (
    check_input_size,
    cls_tokens,
    reader_error,
    sha256_of_files,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".safetensors", ".bin")
_INSTALL = "pip install 'genprint[clip]' (transformers)"


def hf_cache_roots() -> list[Path]:
    """Folders that may hold a Hugging Face hub cache, in lookup order."""
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    roots.append(xdg / "huggingface" / "hub")
    return roots


def snapshot_of(entry: Path) -> Path | None:
    """The snapshot folder of a cache entry ``models--org--name`` (``refs/main`` or the only one)."""
    snapshots = entry / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = entry / "refs" / "main"
    if ref.is_file():
        target = snapshots / ref.read_text(encoding="utf-8").strip()
        if (target / "config.json").is_file():
            return target
    found = sorted(p for p in snapshots.iterdir() if (p / "config.json").is_file())
    return found[-1] if len(found) == 1 else None


def find_hf_model(name_or_path: str) -> Path | None:
    """A local transformers model folder for a directory, cache entry or cached repo id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        return snapshot_of(path)
    parts = name_or_path.split("/")
    if len(parts) == 2 and all(parts) and not path.exists():
        for root in hf_cache_roots():
            entry = root / f"models--{parts[0]}--{parts[1]}"
            if entry.is_dir():
                return snapshot_of(entry)
    return None


def _processor_settings(folder: Path, model_type: str, config: Any) -> tuple[Any, Any, int]:
    is_clip = model_type.startswith("clip")
    mean, std = (CLIP_MEAN, CLIP_STD) if is_clip else (IMAGENET_MEAN, IMAGENET_STD)
    native = int(getattr(config, "image_size", 224))
    proc = folder / "preprocessor_config.json"
    if proc.is_file():
        raw = json.loads(proc.read_text(encoding="utf-8"))
        mean = tuple(raw.get("image_mean", mean))
        std = tuple(raw.get("image_std", std))
        crop = raw.get("crop_size")
        if isinstance(crop, dict):
            crop = crop.get("height") or crop.get("shortest_edge")
        if isinstance(crop, int) and crop > 0:
            native = crop
    elif model_type == "dinov2" and native > 224:
        native = 224  # DINOv2 configs say 518 (the position grid); its processors crop 224
    return mean, std, native

def _unreadable(folder: Path, what: str, exc: BaseException) -> ValueError:
    """The error for a transformers folder whose ``what`` cannot be read."""
    return ValueError(f"{folder}: its {what} cannot be read (truncated, corrupt or another "
                      f"architecture: {reader_error(exc)})")


class HFVisionBackbone(Backbone):
    """A transformers CLIP / DINOv2 vision model from a local folder (see module doc)."""
    dynamic_input = True
    """Runs at any valid input size (no rebuild needed to change it)."""

    def __init__(self, path: str | os.PathLike[str], input_size: int | None = None) -> None:
        super().__init__()
        folder = find_hf_model(str(path))
        if folder is None:
            raise FileNotFoundError(f"{path}: no transformers model folder (config.json) there "
                                    "or in the local Hugging Face cache")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import transformers
        except ImportError:
            raise ImportError(f"loading {path} needs transformers: {_INSTALL}") from None
        try:
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        except (ImportError, PermissionError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a config.json transformers cannot read
            raise _unreadable(folder, "config.json", exc) from None
        model_type = str(config.model_type)
        model_class = {"clip": transformers.CLIPVisionModel,
                       "clip_vision_model": transformers.CLIPVisionModel,
                       "dinov2": transformers.Dinov2Model}.get(model_type, transformers.AutoModel)
        logs = transformers.utils.logging
        verbosity = logs.get_verbosity()
        logs.set_verbosity_error()  # the load report lists the text tower's tensors as unused
        logs.disable_progress_bar()
        try:
            model = model_class.from_pretrained(folder, local_files_only=True)
        except (ImportError, PermissionError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure (safetensors has its own)
            raise _unreadable(folder, "weights", exc) from None
        finally:
            logs.set_verbosity(verbosity)
            logs.enable_progress_bar()
        vision_cfg = getattr(model.config, "vision_config", model.config)
        model.eval().requires_grad_(False)
        self.model = model
        self.model_type = model_type
        self.folder = folder.resolve()
        patch = int(getattr(vision_cfg, "patch_size", 16))
        self.n_layers = int(getattr(vision_cfg, "num_hidden_layers", 0))
        mean, std, native = _processor_settings(folder, model_type, vision_cfg)
        size = check_input_size(input_size or native // patch * patch, patch, patch, str(path))
        self.name = f"hf:{model_type}"
        self.preprocessing = Preprocessing(
            input_size=size, mean=mean, std=std, crop="center",
            extra={"native_size": native, "size_multiple": patch, "min_size": patch,
                   "weights": str(self.folder), "format": "transformers",
                   "model_type": model_type,
                   "features": "CLS token of every layer's hidden state"},
        )
        files = [p for p in self.folder.iterdir()
                 if p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"]
        self.weights_id = sha256_of_files(files)

    def layer_names(self) -> list[str]:
        return [f"layer{k + 1}" for k in range(self.n_layers)]

    @torch.no_grad()
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        kwargs: dict[str, Any] = {"output_hidden_states": True}
        if self.model_type.startswith("clip"):
            kwargs["interpolate_pos_encoding"] = True
        out = self.model(pixel_values=self.normalise(x.float()), **kwargs)
        hidden = out.hidden_states[1:]
        if not hidden or hidden[0].dim() != 3:
            raise ValueError(f"{self.folder}: model type {self.model_type} does not return token "
                             "sequences; genprint reads ViT-like models (CLIP, DINOv2)")
        return cls_tokens(hidden)
