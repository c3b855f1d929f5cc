"""CLIP vision towers from open_clip checkpoint files, read without importing open_clip.

open_clip cannot be imported next to the CPU build of torch: it imports torchvision at import
time, and the only torchvision builds on the registry are CUDA builds that fail to load there
(see ENVIRONMENT.md). Its checkpoints are plain torch files, though, so genprint reads them
itself and runs the vision tower with its own small ViT, which has open_clip's module names so
the weights load with a strict key check:

* file formats: an open_clip training checkpoint (``torch.save({"epoch", "name",
  "state_dict", ...})``, keys possibly prefixed ``module.``), a bare state dict (``.pt``,
  ``.bin``, ``.pth``) or ``.safetensors`` (the hub files), and OpenAI's TorchScript archives;
* architecture: the standard open_clip ``VisionTransformer`` (pre-norm blocks, optional layer
  scale, learnable position embedding). Width, depth, patch size, grid and MLP width are read
  from the tensor shapes; the head count is ``width // 64`` (open_clip's default head width;
  ViT-H, ViT-g, ViT-bigG and ViT-e use 16; ``heads=`` overrides). Other towers
  (ModifiedResNet, timm trunks, NormFormer-style blocks) are refused with a message;
* activation: GELU, or QuickGELU when the model name ends in ``-quickgelu`` or the file is an
  OpenAI TorchScript archive (OpenAI's weights were trained with QuickGELU: a plain state dict of
  them needs ``model_name="ViT-B-16-quickgelu"`` or ``act="quickgelu"``).

Features: the CLS token of the residual stream after every block (no ``ln_post``, no projection).
At an input smaller than the native one, the position embedding grid is resized bicubically
(with antialiasing) to the patch grid of the input.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genprint.backbones.base import Backbone, Preprocessing
from genprint.backbones.common import check_input_size, reader_error, sha256_of_files

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
SPECIAL_HEADS = {1280: 16, 1408: 16, 1664: 16, 1792: 16}
"""Vision widths whose head count is not ``width // 64``: open_clip's ViT-H (head width 80),
ViT-g (88), ViT-bigG (104) and ViT-e (112) all have 16 heads."""


class QuickGELU(nn.Module):
    """x · sigmoid(1.702 x), the activation of OpenAI's CLIP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    """Per-channel scale (key ``gamma``, as in open_clip)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with open_clip's parameter names."""

    def __init__(self, width: int, heads: int, mlp: int, quickgelu: bool, layer_scale: bool) \
            -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ls_1: nn.Module = LayerScale(width) if layer_scale else nn.Identity()
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, mlp))
        self.mlp.add_module("gelu", QuickGELU() if quickgelu else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(mlp, width))
        self.ls_2: nn.Module = LayerScale(width) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.ls_1(self.attn(h, h, h, need_weights=False)[0])
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class VisionTower(nn.Module):
    """The open_clip ViT vision tower up to the last block (see module doc)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        width, patch = cfg["width"], cfg["patch"]
        self.patch = patch
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(cfg["grid"] ** 2 + 1, width))
        self.ln_pre: nn.Module = nn.LayerNorm(width) if cfg["ln_pre"] else nn.Identity()
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            Block(width, cfg["heads"], cfg["mlp"], cfg["quickgelu"], cfg["layer_scale"])
            for _ in range(cfg["layers"])
        )

    def position_embedding(self, grid: int) -> torch.Tensor:
        pos = self.positional_embedding
        old = math.isqrt(pos.shape[0] - 1)
        if grid == old:
            return pos
        img = pos[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
        img = F.interpolate(img, size=(grid, grid), mode="bicubic", align_corners=False,
                            antialias=True)
        return torch.cat([pos[:1], img.permute(0, 2, 3, 1).reshape(grid * grid, -1)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.view(1, 1, -1).expand(len(x), 1, -1)
        h = torch.cat([cls, tokens], dim=1) + self.position_embedding(x.shape[-1] // self.patch)
        h = self.ln_pre(h)
        out = []
        for block in self.transformer.resblocks:
            h = block(h)
            out.append(h[:, 0, :].contiguous())
        return out


def unreadable_checkpoint(path: Path, exc: BaseException) -> ValueError:
    """The error for a checkpoint file that torch or safetensors could not read: one that
    holds objects other than tensors (refused by ``weights_only=True``, which runs no code from
    the file), or one that is truncated or corrupt."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if "Weights only load failed" in str(exc) and found:
        return ValueError(
            f"{path}: holds objects other than tensors ({found.group(1)}); genprint reads "
            "checkpoints with torch.load(weights_only=True), which runs no code from the "
            "file: save its state dict alone (torch.save(model.state_dict(), PATH)), or as "
            ".safetensors")
    return ValueError(f"{path}: not a readable checkpoint (truncated, corrupt or not a "
                      f"torch/safetensors file: {reader_error(exc)})")


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of a checkpoint file, and whether it was an OpenAI TorchScript archive."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path))), False
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except RuntimeError as exc:
            if "TorchScript" not in str(exc) and "constants.pkl" not in str(exc):
                raise
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict()), True
    except (PermissionError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure: the file is not usable
        raise unreadable_checkpoint(path, exc) from None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path}: not an open_clip checkpoint (no state dict of tensors)")
    if raw and all(k.startswith("module.") for k in raw):
        raw = {k[len("module."):]: v for k, v in raw.items()}
    return raw, False


def tower_config(sd: dict[str, torch.Tensor], quickgelu: bool) -> dict[str, Any]:
    """Architecture of the vision tower read from the shapes of its tensors."""
    if "visual.conv1.weight" not in sd:
        trunk = "a timm trunk" if any(k.startswith("visual.trunk.") for k in sd) else \
            "a ModifiedResNet" if "visual.layer1.0.conv1.weight" in sd else "no vision ViT"
        raise ValueError(f"unsupported open_clip vision tower ({trunk}); genprint reads "
                         "open_clip VisionTransformer towers")
    width, _, patch, _ = sd["visual.conv1.weight"].shape
    layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    return {
        "width": int(width), "patch": int(patch), "layers": layers,
        "grid": math.isqrt(sd["visual.positional_embedding"].shape[0] - 1),
        "heads": SPECIAL_HEADS.get(int(width), max(1, int(width) // 64)),
        "mlp": int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "ln_pre": "visual.ln_pre.weight" in sd,
        "layer_scale": "visual.transformer.resblocks.0.ls_1.gamma" in sd,
        "quickgelu": quickgelu,
    }


VIT_WIDTHS = {"S": 384, "B": 768, "L": 1024, "H": 1280}
"""Transformer width of open_clip's named ViT sizes (for checking --backbone-model)."""


def _check_model_name(model_name: str | None, cfg: dict[str, Any], path: Path) -> None:
    """Refuse a model name (e.g. ``ViT-B-16-quickgelu``) that contradicts the tensors: the
    architecture is read from them, so a wrong name would only mislabel the model card."""
    found = re.match(r"ViT-([A-Za-z]+)-(\d+)", model_name or "")
    if not found:
        return
    size, patch = found.group(1).upper(), int(found.group(2))
    width = VIT_WIDTHS.get(size)
    if patch != cfg["patch"] or (width is not None and width != cfg["width"]):
        raise ValueError(f"{path}: --backbone-model {model_name} says patch {patch}"
                         + (f", width {width}" if width else "")
                         + f", but the checkpoint's tensors say patch {cfg['patch']}, width "
                         f"{cfg['width']} (the architecture is read from the tensors; the name "
                         "only selects the activation)")


class OpenClipBackbone(Backbone):
    """CLIP ViT vision tower of an open_clip checkpoint file (see module doc)."""
    dynamic_input = True
    """Runs at any valid input size (no rebuild needed to change it)."""

    def __init__(self, path: str | os.PathLike[str], model_name: str | None = None,
                 act: str | None = None, input_size: int | None = None,
                 heads: int | None = None,
                 mean: tuple[float, float, float] = OPENAI_MEAN,
                 std: tuple[float, float, float] = OPENAI_STD) -> None:
        super().__init__()
        self.path = Path(path).expanduser().resolve()
        sd, torchscript = read_state_dict(self.path)
        if act not in (None, "gelu", "quickgelu"):
            raise ValueError(f"act must be 'gelu' or 'quickgelu', got {act!r}")
        quickgelu = act == "quickgelu" if act else (
            torchscript or bool(model_name and model_name.endswith("-quickgelu")))
        cfg = tower_config(sd, quickgelu)
        _check_model_name(model_name, cfg, self.path)
        if heads is not None:
            if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 \
                    or cfg["width"] % heads:
                raise ValueError(f"heads must be a whole number ≥ 1 that divides the tower's "
                                 f"width {cfg['width']}, got {heads!r}")
            cfg["heads"] = heads
        self.config = cfg
        self.tower = VisionTower(cfg)
        prefix = "visual."
        keys = {k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix)}
        wanted = set(self.tower.state_dict())
        unknown = sorted(k for k in keys if k.startswith("transformer.") and k not in wanted)
        if unknown:
            raise ValueError(f"{self.path}: unsupported open_clip block variant (unexpected "
                             f"tensors such as {unknown[0]})")
        self.tower.load_state_dict({k: v for k, v in keys.items() if k in wanted}, strict=True)
        self.tower.eval().requires_grad_(False)
        native = cfg["grid"] * cfg["patch"]
        size = check_input_size(input_size or native, cfg["patch"], cfg["patch"], "open_clip")
        self.name = f"open_clip:{model_name or 'ViT'}"
        self.preprocessing = Preprocessing(
            input_size=size, mean=tuple(mean), std=tuple(std), crop="center",  # type: ignore[arg-type]
            extra={"native_size": native, "size_multiple": cfg["patch"], "min_size": cfg["patch"],
                   "weights": str(self.path), "format": "open_clip",
                   "model_name": model_name, "architecture": dict(cfg),
                   "features": "CLS token of each block's residual output (no ln_post)"},
        )
        self.weights_id = sha256_of_files([self.path])

    def layer_names(self) -> list[str]:
        return [f"block{k}" for k in range(self.config["layers"])]

    @torch.no_grad()
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] != x.shape[-2] or x.shape[-1] % self.config["patch"]:
            raise ValueError(f"open_clip backbone: input must be square with sides multiple of "
                             f"{self.config['patch']}, got {tuple(x.shape[-2:])}")
        return self.tower(self.normalise(x.float()))
