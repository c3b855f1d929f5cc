"""Camera-model-identification pretraining of the forensic CNN (the paper's key ingredient).

The network plus a linear head over camera models is trained with cross-entropy on random
patches of camera images (``genprint bench build DIR --task camera`` makes the data: one source
per simulated camera model). Learning to tell cameras apart forces the network onto low-level
acquisition traces (demosaicing, noise, processing), which transfer to telling generators apart.

The result is a checkpoint directory in the model-directory format (atomic write, checksums)::

    CKPT/card.json              kind "camera-pretraining", backbone card with its architecture,
                                camera names, training settings and validation accuracy
    CKPT/weights.safetensors    net.* (the backbone) and head.* (the camera classifier)

``metric`` training with ``init="camera"`` starts from the ``net.*`` weights.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genprint.backbones.forensic_cnn import (
    ForensicCNN,
    ForensicCNNConfig,
    patches_to_tensor,
    state_tensors,
)
from genprint.io.crops import center_crop
from genprint.methods.metric_train import EpochCallback, optimise

CHECKPOINT_KIND = "camera-pretraining"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "pretrained" / "forensic-cnn-camera"
"""Where the committed camera checkpoint lives (built by ``genprint pretrain camera``)."""


def default_camera_checkpoint() -> Path | None:
    """The shipped camera checkpoint, or ``None`` when it has not been built yet."""
    return SHIPPED_CHECKPOINT if (SHIPPED_CHECKPOINT / "card.json").is_file() else None


@dataclass
class CameraPretraining:
    """A pretrained network, its camera head, the camera names and what training recorded."""

    net: ForensicCNN
    head: nn.Linear
    cameras: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def _accuracy(net: ForensicCNN, head: nn.Linear, images: Sequence[np.ndarray],
              labels: np.ndarray, batch: int = 256) -> float:
    if len(images) == 0:
        return float("nan")
    s = net.config.patch_size
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = patches_to_tensor(np.stack([center_crop(im, s) for im in images[i : i + batch]]))
            pred = head(net.raw_embedding(x)).argmax(dim=1).numpy()
            correct += int((pred == labels[i : i + batch]).sum())
    return correct / len(images)


def pretrain_camera(
    train_images: Sequence[np.ndarray], train_labels: Sequence[str],
    val_images: Sequence[np.ndarray], val_labels: Sequence[str], *,
    config: ForensicCNNConfig | None = None, epochs: int = 30, batch_size: int = 64,
    lr: float = 2e-3, weight_decay: float = 1e-4, crops_per_image: int = 1, seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> CameraPretraining:
    """Train a forensic CNN to identify camera models; validation gives the reported accuracy
    (centre crops)."""
    cameras = sorted(set(train_labels))
    if len(cameras) < 2:
        raise ValueError(f"camera pretraining needs at least 2 camera models, got {cameras}")
    torch.manual_seed(seed)
    net = ForensicCNN(config or ForensicCNNConfig())
    head = nn.Linear(net.embedding_dim, len(cameras))
    index = {c: i for i, c in enumerate(cameras)}
    y = np.array([index[c] for c in train_labels], dtype=np.int64)
    ce = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    history = optimise(
        net, lambda x, t: ce(head(net.raw_embedding(x)), t), list(head.parameters()),
        train_images, y, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        extra_lr_mult=1.0, crops_per_image=crops_per_image, seed=seed, on_epoch=on_epoch)
    keep = [i for i, c in enumerate(val_labels) if c in index]
    val_acc = _accuracy(net, head, [val_images[i] for i in keep],
                        np.array([index[val_labels[i]] for i in keep], dtype=np.int64))
    info = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "crops_per_image": crops_per_image, "seed": seed, "n_train": len(train_images),
            "n_val": len(keep), "final_loss": history[-1] if history else None,
            "val_accuracy": val_acc, "train_seconds": round(time.perf_counter() - t0, 1)}
    return CameraPretraining(net, head, cameras, info)


def save_camera_checkpoint(result: CameraPretraining, path: str | os.PathLike[str],
                           overwrite: bool = False, provenance: dict[str, Any] | None = None
                           ) -> Path:
    """Write the checkpoint directory atomically (see module doc)."""
    from genprint.storage.model_dir import write_model_dir

    tensors = state_tensors(result.net)
    tensors.update({f"head.{k}": v.detach().cpu().numpy()
                    for k, v in result.head.state_dict().items()})
    acc = result.info.get("val_accuracy")
    training = {**result.info, **(provenance or {})}
    training["val_accuracy"] = float(acc) if acc is not None and math.isfinite(acc) else None
    card = {"kind": CHECKPOINT_KIND, "backbone": result.net.card(), "cameras": result.cameras,
            "training": training, "val_accuracy": training["val_accuracy"]}
    return write_model_dir(path, card, tensors=tensors, overwrite=overwrite)


def checkpoint_architecture(path: str | os.PathLike[str]) -> ForensicCNNConfig:
    """The architecture stored in a camera checkpoint (or a ``metric`` model) card."""
    from genprint.storage.model_dir import ModelFormatError, read_card

    arch = read_card(path).get("backbone", {}).get("architecture")
    if not isinstance(arch, dict):
        raise ModelFormatError(f"{path}: its card holds no forensic-cnn architecture")
    return ForensicCNNConfig.from_dict(arch)
