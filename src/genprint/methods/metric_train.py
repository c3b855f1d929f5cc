"""Training loops of the forensic CNN: metric learning on known sources (and shared helpers).

Losses and miners come from pytorch-metric-learning, used as they are:

* ``proxy-anchor`` — :class:`ProxyAnchorLoss` (one learned proxy per source);
* ``multi-similarity`` — :class:`MultiSimilarityLoss` on the pairs chosen by
  :class:`MultiSimilarityMiner`;
* ``arcface`` — :class:`ArcFaceLoss` (its class weights act as proxies);
* ``supcon`` — :class:`SupConLoss`;
* ``nca`` — :class:`NCALoss` (neighbourhood components analysis: a soft nearest-neighbour
  classifier over the batch).

They are kept in the registry :data:`METRIC_LOSSES`; register another one with
``@METRIC_LOSSES.register("name", proxies=False)`` on a function ``(n_classes, embedding_dim)
→ LossBundle``.

Training sees random ``patch_size`` crops of the training images (never resized), a fresh crop
per image and epoch; the first-layer constraint is re-imposed after every optimiser step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from genprint.backbones.forensic_cnn import ForensicCNN, patches_to_tensor
from genprint.io.crops import random_crop
from genprint.registry import Registry

EpochCallback = Callable[[int, float], None]
"""Called after each epoch with (epoch number from 1, mean training loss)."""


@dataclass
class LossBundle:
    """A pytorch-metric-learning loss, its miner (or None) and whether it holds proxies."""

    loss: nn.Module
    miner: nn.Module | None

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.miner is not None:
            return self.loss(embeddings, labels, self.miner(embeddings, labels))
        return self.loss(embeddings, labels)


METRIC_LOSSES: Registry[Callable[[int, int], LossBundle]] = Registry("metric loss")
"""Metric-learning losses by name (``--loss``); meta ``proxies=True`` marks losses that learn one
proxy per source (usable as reference points)."""


@METRIC_LOSSES.register("proxy-anchor", proxies=True)
def _proxy_anchor(n_classes: int, embedding_dim: int) -> LossBundle:
    from pytorch_metric_learning import losses

    return LossBundle(losses.ProxyAnchorLoss(n_classes, embedding_dim, margin=0.1, alpha=32), None)


@METRIC_LOSSES.register("multi-similarity", proxies=False)
def _multi_similarity(n_classes: int, embedding_dim: int) -> LossBundle:
    from pytorch_metric_learning import losses, miners

    return LossBundle(losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5),
                      miners.MultiSimilarityMiner(epsilon=0.1))


@METRIC_LOSSES.register("arcface", proxies=True)
def _arcface(n_classes: int, embedding_dim: int) -> LossBundle:
    from pytorch_metric_learning import losses

    return LossBundle(losses.ArcFaceLoss(n_classes, embedding_dim, margin=28.6, scale=30), None)


@METRIC_LOSSES.register("supcon", proxies=False)
def _supcon(n_classes: int, embedding_dim: int) -> LossBundle:
    from pytorch_metric_learning import losses

    return LossBundle(losses.SupConLoss(temperature=0.1), None)


@METRIC_LOSSES.register("nca", proxies=False)
def _nca(n_classes: int, embedding_dim: int) -> LossBundle:
    from pytorch_metric_learning import losses

    return LossBundle(losses.NCALoss(softmax_scale=8), None)


LOSSES = tuple(METRIC_LOSSES.names())
"""The built-in loss names (kept for callers of earlier versions; the registry is the source)."""
PROXY_LOSSES = tuple(n for n in LOSSES if METRIC_LOSSES.meta(n).get("proxies"))
"""The built-in losses that learn one proxy per source (kept for earlier callers)."""


def has_proxies(name: str) -> bool:
    """Whether the loss called ``name`` learns one proxy per source."""
    return bool(METRIC_LOSSES.meta(name).get("proxies", False))


def build_loss(name: str, n_classes: int, embedding_dim: int) -> LossBundle:
    """The loss (and miner) called ``name``; see :data:`METRIC_LOSSES`."""
    if name not in METRIC_LOSSES:
        from genprint.plugins import PLUGIN_HINT

        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(METRIC_LOSSES)} "
                         f"({PLUGIN_HINT})")
    return METRIC_LOSSES.get(name)(n_classes, embedding_dim)


def proxies(bundle: LossBundle) -> np.ndarray:
    """The learned, L2-normalised proxies of a proxy loss, one row per class (C×D)."""
    if hasattr(bundle.loss, "proxies"):
        p = bundle.loss.proxies.detach()
    elif hasattr(bundle.loss, "W"):
        p = bundle.loss.W.detach().T
    else:
        raise ValueError("this loss has no proxies; use k-means reference points")
    return torch.nn.functional.normalize(p, dim=1).cpu().numpy().astype(np.float32)


SYMMETRIES: dict[str, tuple[int, ...]] = {"none": (0,), "flips": (0, 2, 4, 6),
                                          "dihedral": tuple(range(8))}
"""The view indices (see :func:`symmetry_view`) of each set of pixel-exact views: identity only;
identity, the half turn and the two flips; all eight flips and quarter turns."""


def symmetry_view(patch: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` (0–7) of an H×W×C patch: ``k % 4`` quarter turns (the flips set uses the half
    turn only, see :func:`symmetry_views`), then a left-right flip when ``k ≥ 4``. Pixels are
    permuted, never interpolated."""
    out = np.rot90(patch, k % 4, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


def symmetry_views(symmetries: str) -> tuple[int, ...]:
    """The view indices of a symmetry set (see :data:`SYMMETRIES`)."""
    if symmetries not in SYMMETRIES:
        raise ValueError(f"symmetries must be one of {', '.join(SYMMETRIES)}, got {symmetries!r}")
    return SYMMETRIES[symmetries]


AUGMENTATIONS = ("none", "jpeg")
"""Training augmentations of ``metric`` (``MetricAttributor(augment=...)``): none, or a JPEG
re-save of a share of the crops (:func:`jpeg_resave`)."""

JPEG_SHARE = 0.5
"""Share of the training crops re-saved as JPEG with ``augment="jpeg"``."""

JPEG_QUALITIES = (60, 95)
"""Range of the JPEG qualities drawn (uniformly, both ends included) for ``augment="jpeg"``."""


JPEG_GRID = 16
"""A JPEG re-save with 4:2:0 chroma works on 16×16 blocks from the image's corner; a crop of a
larger image may start anywhere on that grid, so training draws the grid's phase."""


def jpeg_resave(patch: np.ndarray, quality: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """An H×W×3 uint8 patch saved as JPEG at ``quality`` (Pillow, 4:2:0 chroma) and decoded
    again: what re-publishing an image does to it. ``offset`` = (dy, dx) puts the patch that
    far from the corner of the JPEG block grid, as for a crop taken inside a larger image: the
    patch is padded by mirroring above and to the left, compressed, and cut out again. The
    size does not change; nothing is resampled."""
    from genprint.evaluation.perturb import jpeg_round_trip
    from genprint.io.images import is_rgb8

    if not is_rgb8(patch):
        raise ValueError(f"JPEG augmentation needs (H, W, 3) uint8 patches, got {patch.dtype} "
                         f"{patch.shape}")
    dy, dx = offset
    if not (0 <= dy < JPEG_GRID and 0 <= dx < JPEG_GRID):
        raise ValueError(f"offset must lie in [0, {JPEG_GRID}), got {offset}")
    if dy or dx:
        padded = np.pad(patch, ((dy, 0), (dx, 0), (0, 0)), mode="symmetric")
        return jpeg_round_trip(padded, quality)[dy:, dx:].copy()
    return jpeg_round_trip(patch, quality)


def check_augment(augment: str) -> None:
    """Raise ``ValueError`` on an unknown augmentation."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")


def patch_batches(
    images: Sequence[np.ndarray], labels: np.ndarray, patch_size: int, batch_size: int,
    rng: np.random.Generator, crops_per_image: int = 1, symmetries: str = "none",
    augment: str = "none",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches of random crops: (N×3×S×S in [0, 1], N labels).

    With ``augment="jpeg"``, :data:`JPEG_SHARE` of the crops are re-saved as JPEG at a quality
    drawn from :data:`JPEG_QUALITIES`, on a block grid of random phase (:func:`jpeg_resave`).
    With ``symmetries`` other than ``"none"``, each crop is then shown in one of the set's
    views, drawn at random (an image is compressed before anyone flips it, and at inference
    the views are taken of the image as it is). Batches of fewer than 2 patches are dropped
    (batch norm and pair losses need 2).
    """
    check_augment(augment)
    views = symmetry_views(symmetries)
    order = np.repeat(np.arange(len(images)), crops_per_image)
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2:
            continue
        patches = np.stack([random_crop(images[i], patch_size, rng) for i in idx])
        if augment == "jpeg":
            lo, hi = JPEG_QUALITIES
            for j in np.flatnonzero(rng.random(len(idx)) < JPEG_SHARE):
                dy, dx = rng.integers(0, JPEG_GRID, 2)
                patches[j] = jpeg_resave(patches[j], int(rng.integers(lo, hi + 1)),
                                         (int(dy), int(dx)))
        if len(views) > 1:
            patches = np.stack([symmetry_view(p, int(k))
                                for p, k in zip(patches, rng.choice(views, len(idx)), strict=True)])
        yield patches_to_tensor(patches), torch.from_numpy(labels[idx]).long()


def optimise(
    net: ForensicCNN,
    step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    extra_params: list[nn.Parameter],
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    extra_lr_mult: float,
    crops_per_image: int,
    seed: int,
    on_epoch: EpochCallback | None = None,
    symmetries: str = "none",
    augment: str = "none",
) -> list[float]:
    """AdamW with a cosine schedule over ``epochs``; returns the mean loss of every epoch.

    ``step_loss(patches, labels)`` computes the loss of a batch; ``extra_params`` (proxies, a
    classification head) get ``extra_lr_mult`` × the learning rate. The network's constraint is
    re-imposed after every step.
    """
    rng = np.random.default_rng(seed)
    groups: list[dict] = [{"params": list(net.parameters()), "lr": lr}]
    if extra_params:
        groups.append({"params": extra_params, "lr": lr * extra_lr_mult, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, (len(images) * crops_per_image + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    history: list[float] = []
    net.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for x, y in patch_batches(images, labels, net.config.patch_size, batch_size, rng,
                                  crops_per_image, symmetries, augment):
            loss = step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            net.constrain()
            total += float(loss.detach()) * len(y)
            count += len(y)
        history.append(total / max(count, 1))
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])
    net.eval()
    return history


def train_metric(
    net: ForensicCNN, images: Sequence[np.ndarray], labels: np.ndarray, n_classes: int, *,
    loss: str, epochs: int, batch_size: int, lr: float, weight_decay: float,
    proxy_lr_mult: float, crops_per_image: int, seed: int,
    on_epoch: EpochCallback | None = None, symmetries: str = "none", augment: str = "none",
    generated: np.ndarray | None = None, real_gen_weight: float = 0.0,
) -> tuple[LossBundle, list[float]]:
    """Metric learning of ``net`` on labelled images (labels 0..n_classes−1).

    With ``real_gen_weight`` > 0 and ``generated`` (one bool per class: is it a generator?), a
    linear real-vs-generated head on the embedding adds ``real_gen_weight`` × its binary
    cross-entropy to the loss, so that what every generator shares against real images is kept
    in the embedding (the head is dropped after training).

    Returns the loss bundle (holding the learned proxies, if any) and the per-epoch losses.
    """
    torch.manual_seed(seed)
    bundle = build_loss(loss, n_classes, net.embedding_dim)
    extra = list(bundle.loss.parameters())
    head: nn.Linear | None = None
    if real_gen_weight > 0:
        if generated is None or len(generated) != n_classes:
            raise ValueError("real_gen_weight needs one generated/real flag per class")
        head = nn.Linear(net.embedding_dim, 1)
        extra += list(head.parameters())
        is_gen = torch.as_tensor(np.asarray(generated, dtype=np.float32))

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = net.embed(x)
        out = bundle(emb, y)
        if head is not None:
            out = out + real_gen_weight * nn.functional.binary_cross_entropy_with_logits(
                head(emb).squeeze(1), is_gen[y])
        return out

    history = optimise(net, step, extra, images, labels, epochs=epochs, batch_size=batch_size,
                       lr=lr, weight_decay=weight_decay, extra_lr_mult=proxy_lr_mult,
                       crops_per_image=crops_per_image, seed=seed, on_epoch=on_epoch,
                       symmetries=symmetries, augment=augment)
    return bundle, history
