"""Tiny randomly initialised CLIP / DINOv2 checkpoints in the on-disk formats users have."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def save_open_clip_checkpoint(path: Path, width: int = 64, layers: int = 2, patch: int = 8,
                              image: int = 32, quickgelu: bool = False, seed: int = 0) -> Path:
    """An open_clip training checkpoint: ``torch.save({"epoch", "name", "state_dict"})``.

    Built by open_clip itself when it can be imported; otherwise (open_clip needs torchvision,
    which does not load next to the CPU torch) the state dict is written with open_clip's
    ``CLIP`` parameter names and shapes (vision ``VisionTransformer`` + a one-layer text tower).
    Keys carry the ``module.`` prefix of distributed training, as real checkpoints often do.
    """
    gen = torch.Generator().manual_seed(seed)
    if importlib.util.find_spec("open_clip") is not None:
        try:
            import open_clip

            vision = {"image_size": image, "patch_size": patch, "width": width,
                      "layers": layers, "head_width": 64, "mlp_ratio": 2.0}
            text = {"context_length": 8, "vocab_size": 50, "width": 64, "heads": 1, "layers": 1}
            model = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text,
                                   quick_gelu=quickgelu)
            state = model.state_dict()
            for v in state.values():
                v.copy_(torch.randn(v.shape, generator=gen) * 0.1)
        except (ImportError, RuntimeError):
            state = _open_clip_like_state(width, layers, patch, image, gen)
    else:
        state = _open_clip_like_state(width, layers, patch, image, gen)
    torch.save({"epoch": 3, "name": "tiny-run",
                "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def _open_clip_like_state(width: int, layers: int, patch: int, image: int,
                          gen: torch.Generator) -> dict[str, torch.Tensor]:
    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.1

    grid = image // patch
    sd = {"visual.conv1.weight": r(width, 3, patch, patch), "visual.class_embedding": r(width),
          "visual.positional_embedding": r(grid * grid + 1, width),
          "visual.ln_pre.weight": 1 + r(width), "visual.ln_pre.bias": r(width),
          "visual.ln_post.weight": 1 + r(width), "visual.ln_post.bias": r(width),
          "visual.proj": r(width, 32), "logit_scale": torch.tensor(4.6),
          "token_embedding.weight": r(50, 64), "positional_embedding": r(8, 64),
          "text_projection": r(64, 32), "ln_final.weight": 1 + r(64), "ln_final.bias": r(64)}
    blocks = [(f"visual.transformer.resblocks.{k}", width) for k in range(layers)]
    blocks.append(("transformer.resblocks.0", 64))
    for prefix, w in blocks:
        sd.update({f"{prefix}.ln_1.weight": 1 + r(w), f"{prefix}.ln_1.bias": r(w),
                   f"{prefix}.attn.in_proj_weight": r(3 * w, w),
                   f"{prefix}.attn.in_proj_bias": r(3 * w),
                   f"{prefix}.attn.out_proj.weight": r(w, w), f"{prefix}.attn.out_proj.bias": r(w),
                   f"{prefix}.ln_2.weight": 1 + r(w), f"{prefix}.ln_2.bias": r(w),
                   f"{prefix}.mlp.c_fc.weight": r(2 * w, w), f"{prefix}.mlp.c_fc.bias": r(2 * w),
                   f"{prefix}.mlp.c_proj.weight": r(w, 2 * w),
                   f"{prefix}.mlp.c_proj.bias": r(w)})
    return sd


def save_hf_clip(folder: Path, vision_only: bool = False, image: int = 32, patch: int = 8) -> Path:
    """A transformers CLIP model (or its vision tower) written by ``save_pretrained``."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=2, image_size=image, patch_size=patch)
    if vision_only:
        CLIPVisionModel(vision).save_pretrained(folder)
    else:
        text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2, "vocab_size": 100, "max_position_embeddings": 16,
                "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
        config = CLIPConfig(vision_config=vision.to_dict(), text_config=text, projection_dim=16)
        CLIPModel(config).save_pretrained(folder)
    return folder


def save_hf_dinov2(folder: Path) -> Path:
    """A transformers DINOv2 model written by ``save_pretrained``."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, image_size=56, patch_size=14)
    Dinov2Model(config).save_pretrained(folder)
    return folder
