"""``metric``: learned forensic embeddings with reference points (Fang, Nguyen, Stamm, 2023).

1. A forensic CNN (:mod:`genprint.backbones.forensic_cnn`: constrained first layer, residual
   stages, L2-normalised embedding) is optionally initialised from a camera-identification
   checkpoint (``init="camera"``, :mod:`genprint.methods.camera_pretrain`), then trained with a
   pytorch-metric-learning loss on random crops of the known sources' training images
   (:mod:`genprint.methods.metric_train`). With ``origin_classes`` (default), training items
   that name an ``origin`` are trained as one class per (source, origin) pair — on the built-in
   bench, each simulated camera model of ``real`` is its own class for the loss — so that the
   embedding keeps what tells the camera pipelines apart instead of pulling every real image
   onto one point. Reference points, thresholds and predictions stay per source.
   With ``pseudo_sources`` = P > 0, P extra loss classes are made by re-synthesising random
   training images through fixed random upsampling operators
   (:mod:`genprint.methods.metric_pseudo`); they shape the embedding only.
   With ``residual_weight`` > 0 (default 0.5 with k-means reference points), 60 training-free
   residual statistics per tile (:mod:`genprint.methods.metric_residual`) are standardised,
   weighted and joined to the unit embedding, and the joined vector re-normalised: everything
   below (reference points, thresholds, enrolment, stored samples) lives in that space.
   With ``augment="jpeg"`` (opt-in), half of the training crops are re-saved as JPEG on a
   block grid of random phase (:func:`genprint.methods.metric_train.jpeg_resave`). With
   ``real_gen_weight`` > 0 (measured, not adopted), a real-vs-generated head on the embedding
   adds its loss during training.
2. **Reference points**, ``refs_per_class`` (K, default 8) per source: k-means centroids of the
   training images' embeddings (default), or the learned proxies of a proxy loss
   (``references="proxies"`` with ``proxy-anchor`` / ``arcface``: one point per source). The
   defaults (K = 8, 60 epochs, proxy-anchor) were chosen on validation data only, by
   ``benchmarks/metric_validation.py`` (known sources held out in turn as pseudo-unknowns). Centroids are the default because proxies end
   up far from the embeddings they attract (cosine ≈ 0.3 on toy sources), which makes
   distance thresholds loose and accepts unknown sources.
3. **Inference**: an image is cut into non-overlapping tiles (never resized; capped at
   ``max_tiles``), tile embeddings are averaged and re-normalised; the candidate source is that of
   the nearest reference point. Score of a source = −(distance to its nearest reference point);
   an image is ``unknown`` when its candidate's score is below that source's threshold.
   ``tile_agreement`` is the share of tiles whose own nearest source is the candidate.
4. **Thresholds** (−distance) are calibrated on the validation images only: each accepts
   ``target_accept`` (95%) of its source's validation images.
   With ``unseen_origin_thresholds`` (opt-in; k-means references), a source whose images name
   several origins — real images and their cameras — is calibrated as if each validation
   image's origin were unseen (reference points rebuilt without that origin's training
   images), so the threshold also holds for cameras that training never saw. It is off by
   default: on validation it let far more unknown generators pass as real (0.44 against 0.18
   of the held-out generators' images) for +0.10 acceptance of unseen cameras.
5. :meth:`MetricAttributor.enroll` adds a new source from ≥ 1 images without retraining (rules in
   :mod:`genprint.methods.metric_refs`); existing reference points and thresholds are unchanged.
   An enrolled source only *adds* (:meth:`MetricAttributor.decide`): it takes the images it
   accepts and is skipped for the others, so an image the trained sources accepted is never made
   ``unknown`` by an enrolment. (Chosen on the validation folds: mean enrolment recall
   0.859 → 0.878, drops equal or lower.) The model keeps up to
   :data:`~genprint.methods.metric_refs.SAMPLES_PER_SOURCE` embeddings of each source's training
   and validation images (``samples_``); with them, and only when asked (``separator=True``,
   ``genprint enroll --separator``), an enrolled source also gets a linear *separator* against
   the other sources, and takes the ``unknown`` images it claims.
"""

from __future__ import annotations

import hashlib
import numbers
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genprint import __version__
from genprint.backbones.forensic_cnn import (
    ForensicCNN,
    ForensicCNNConfig,
    load_weights,
    patches_to_tensor,
    state_tensors,
)
from genprint.io.content import NO_CONTENT_REASON, is_uniform
from genprint.io.crops import tiles
from genprint.io.fingerprint import as_rows, fingerprint
from genprint.io.images import is_rgb8
from genprint.io.sources import check_source_names
from genprint.methods import metric_refs as refs
from genprint.methods import metric_residual as residual
from genprint.methods.base import (
    METHODS,
    Attributor,
    NotFittedError,
    Prediction,
    check_training_labels,
)
from genprint.methods.metric_enrol_check import (
    MAX_CHECK_IMAGES,
    known_overlap,
    leave_one_out_check,
)
from genprint.methods.metric_pseudo import PSEUDO_KINDS, pseudo_source_images
from genprint.methods.metric_train import (
    METRIC_LOSSES,
    EpochCallback,
    check_augment,
    has_proxies,
    proxies,
    symmetry_view,
    symmetry_views,
    train_metric,
)
from genprint.methods.thresholds import acceptance_rank
from genprint.storage.model_dir import ModelContents, ModelFormatError, sha256_file
from genprint.world.protocols import REAL

MAX_RESIDUAL_WEIGHT = 100.0
"""Largest ``residual_weight`` accepted (beyond it the embedding would not count at all)."""


def weight_problem(weight: object) -> bool:
    """Whether ``weight`` is not a usable ``residual_weight`` (None, or a real in [0, max])."""
    if weight is None:
        return False
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        return True
    try:
        value = float(weight)
    except (OverflowError, ValueError):
        return True
    return not (0.0 <= value <= MAX_RESIDUAL_WEIGHT)  # also refuses nan


RESIDUAL_WEIGHT = 0.5
"""Default weight of the residual statistics joined to the embedding (k-means reference points):
chosen on the validation folds among 0, 0.25, 0.5, 1 and 2 (docs/metric.md)."""

INITS = ("scratch", "camera")
REFERENCE_KINDS = ("kmeans", "proxies")
FORWARD_CHUNK = 16
"""Tiles per network forward at inference (see :meth:`MetricAttributor._embed_tiles`)."""


class EnrolmentConflict(ValueError):
    """Enrolment images that are pictures the model was already fitted on (trained, validated
    or enrolled), so already labelled as one of its sources; ``indices`` says which of the
    images given."""

    def __init__(self, indices: list[int], message: str) -> None:
        super().__init__(message)
        self.indices = indices


def check_rgb_uint8(images: Sequence[np.ndarray], name: str) -> None:
    """Raise ``ValueError`` naming the first of ``images`` that is not an (H, W, 3) uint8 array
    (``name``: which images, for the message). Files read by :mod:`genprint.io.images` always
    are; arrays from elsewhere (floats, grey, RGBA) would otherwise train or enrol on another
    scale of pixels without a word."""
    for i, img in enumerate(images):
        if not is_rgb8(img):
            raise ValueError(f"{name} image {i} is not an (H, W, 3) uint8 array (got "
                             f"{getattr(img, 'dtype', type(img).__name__)} "
                             f"{getattr(img, 'shape', '')}); genprint.io.images reads files as "
                             "RGB uint8")


def training_classes(labels: Sequence[str], origins: Sequence[str | None] | None,
                     index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Classes of the metric-learning loss: one per source, or one per (source, origin) pair
    where ``origins`` are given (``None`` origins fall back to the source).

    Returns each image's loss class and each loss class's source index.
    """
    keys = [(lab, None) for lab in labels] if origins is None else list(
        zip(labels, origins, strict=True))
    pairs = sorted(set(keys), key=lambda k: (k[0], k[1] or ""))
    at = {k: i for i, k in enumerate(pairs)}
    y = np.array([at[k] for k in keys], dtype=np.int64)
    return y, np.array([index[lab] for lab, _ in pairs], dtype=np.int64)


@METHODS.register("metric")
class MetricAttributor(Attributor):
    """Forensic-CNN embeddings, reference points and distance thresholds (see module doc)."""

    method = "metric"
    uses_origins = True

    def __init__(
        self, patch_size: int = 32, embedding_dim: int = 128, width: int = 16, blocks: int = 1,
        loss: str = "proxy-anchor", refs_per_class: int = 8, references: str = "kmeans",
        epochs: int = 60, batch_size: int = 64, lr: float = 2e-3, weight_decay: float = 1e-4,
        proxy_lr_mult: float = 10.0, crops_per_image: int = 1, init: str = "scratch",
        camera_ckpt: str | None = None, target_accept: float = 0.95, max_tiles: int = 16,
        origin_classes: bool = True, unseen_origin_thresholds: bool = False,
        pseudo_sources: int = 0, pseudo_kind: str = "upsample", symmetries: str = "none",
        residual_weight: float | None = None, augment: str = "none",
        real_gen_weight: float = 0.0, seed: int = 0,
    ) -> None:
        self.patch_size = patch_size
        self.embedding_dim = embedding_dim
        self.width = width
        self.blocks = blocks
        self.loss = loss
        self.refs_per_class = refs_per_class
        self.references = references
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.proxy_lr_mult = proxy_lr_mult
        self.crops_per_image = crops_per_image
        self.init = init
        self.camera_ckpt = camera_ckpt
        self.target_accept = target_accept
        self.max_tiles = max_tiles
        self.origin_classes = origin_classes
        self.unseen_origin_thresholds = unseen_origin_thresholds
        self.pseudo_sources = pseudo_sources
        self.pseudo_kind = pseudo_kind
        self.symmetries = symmetries
        self.residual_weight = residual_weight
        self.augment = augment
        self.real_gen_weight = real_gen_weight
        self.seed = seed
        self.on_epoch: EpochCallback | None = None
        """Optional progress hook called after each training epoch (not saved)."""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (stored in the card)."""
        names = ("patch_size", "embedding_dim", "width", "blocks", "loss", "refs_per_class",
                 "references", "epochs", "batch_size", "lr", "weight_decay", "proxy_lr_mult",
                 "crops_per_image", "init", "camera_ckpt", "target_accept", "max_tiles",
                 "origin_classes", "unseen_origin_thresholds", "pseudo_sources", "pseudo_kind",
                 "symmetries", "residual_weight", "augment", "real_gen_weight",
                 "seed")
        return {n: getattr(self, n) for n in names}

    @property
    def effective_residual_weight(self) -> float:
        """The weight of the residual statistics (:mod:`genprint.methods.metric_residual`):
        ``residual_weight``, or where it is ``None`` (default) :data:`RESIDUAL_WEIGHT` with
        k-means reference points and 0 with proxies (which live in the network's space)."""
        if self.residual_weight is None:
            return RESIDUAL_WEIGHT if self.references == "kmeans" else 0.0
        return float(self.residual_weight)  # type: ignore[arg-type]

    @property
    def min_size(self) -> int:
        return self.patch_size

    @property
    def config(self) -> ForensicCNNConfig:
        """Architecture requested by the parameters."""
        return ForensicCNNConfig(embedding_dim=self.embedding_dim, patch_size=self.patch_size,
                                 width=self.width, blocks=self.blocks)

    @classmethod
    def demo_params(cls, quick: bool) -> dict[str, Any]:
        """Settings for ``genprint demo``: ≈1 min (quick) / ≈5 min (full) on 2 cores for ~7
        sources × 180 training images of 32×32 (measured: 34 s quick, ≈10 s per full epoch on
        one busy core); camera init when the shipped checkpoint exists (its architecture is
        used, and quick mode trains fewer epochs if it is wider)."""
        from genprint.methods.camera_pretrain import (
            checkpoint_architecture,
            default_camera_checkpoint,
        )

        params: dict[str, Any] = ({"width": 8, "embedding_dim": 64, "epochs": 12} if quick
                                  else {"width": 16, "embedding_dim": 128, "epochs": 24})
        ckpt = default_camera_checkpoint()
        if ckpt is not None:
            arch = checkpoint_architecture(ckpt)
            params.update(init="camera", camera_ckpt=str(ckpt), width=arch.width,
                          embedding_dim=arch.embedding_dim, patch_size=arch.patch_size,
                          blocks=arch.blocks)
            if quick:  # an epoch costs ≈ width^1.3: keep the quick run near one minute
                params["epochs"] = max(3, int(12 * (8 / (arch.width * arch.blocks)) ** 1.3))
        return params

    # ------------------------------------------------------------------ building blocks
    def check_settings(self) -> None:
        self._check_params()

    def _check_params(self) -> None:
        if self.loss not in METRIC_LOSSES:
            from genprint.plugins import PLUGIN_HINT

            raise ValueError(f"unknown loss {self.loss!r}; choose one of "
                             f"{', '.join(METRIC_LOSSES)} ({PLUGIN_HINT})")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.references not in REFERENCE_KINDS:
            raise ValueError(f"references must be one of {', '.join(REFERENCE_KINDS)}")
        symmetry_views(self.symmetries)  # raises on an unknown set
        check_augment(self.augment)
        if (isinstance(self.real_gen_weight, bool)
                or not isinstance(self.real_gen_weight, (int, float, np.floating, np.integer))
                or not 0.0 <= float(self.real_gen_weight) <= 100.0):
            raise ValueError(f"real_gen_weight must be a number from 0 to 100, got "
                             f"{self.real_gen_weight!r}")
        if self.pseudo_sources < 0:
            raise ValueError(f"pseudo_sources must be ≥ 0, got {self.pseudo_sources}")
        if self.pseudo_kind not in PSEUDO_KINDS:
            raise ValueError(f"pseudo_kind must be one of {PSEUDO_KINDS}, got "
                             f"{self.pseudo_kind!r}")
        if weight_problem(self.residual_weight):
            raise ValueError(f"residual_weight must be None or a number from 0 to "
                             f"{MAX_RESIDUAL_WEIGHT:g}, got {self.residual_weight!r}")
        if self.effective_residual_weight > 0 and self.references == "proxies":
            raise ValueError("residual_weight > 0 needs k-means reference points: the proxies "
                             "live in the network's embedding, not in the joined space")
        if self.refs_per_class < 1:
            raise ValueError(f"refs_per_class must be ≥ 1, got {self.refs_per_class}")
        for name, lowest in (("patch_size", 8), ("embedding_dim", 1), ("width", 1),
                             ("blocks", 0), ("epochs", 0), ("batch_size", 2), ("max_tiles", 1),
                             ("crops_per_image", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) \
                    or value < lowest:
                raise ValueError(f"{name} must be a whole number ≥ {lowest}"
                                 + (" (metric learning compares the images of a batch)"
                                    if name == "batch_size" else "") + f", got {value!r}")
        if not (self.lr > 0 and 0.5 <= self.target_accept <= 1.0):
            raise ValueError(f"lr must be > 0 and target_accept from 0.5 to 1, got {self.lr!r} "
                             f"and {self.target_accept!r}")
        proxy_losses = [n for n in METRIC_LOSSES if has_proxies(n)]
        if self.references == "proxies" and self.loss not in proxy_losses:
            raise ValueError("proxy reference points need a proxy loss "
                             f"({', '.join(proxy_losses)}); with them, each trained source has "
                             "one point (its proxy) whatever refs_per_class")

    def _initial_network(self) -> ForensicCNN:
        torch.manual_seed(self.seed)
        net = ForensicCNN(self.config)
        if self.init == "camera":
            if self.camera_ckpt is None:
                from genprint.methods.camera_pretrain import default_camera_checkpoint

                shipped = default_camera_checkpoint()
                if shipped is None:
                    raise ValueError("init='camera' needs a camera checkpoint: build one with "
                                     "`genprint pretrain camera` and pass its path, or use "
                                     "init='scratch'")
                self.camera_ckpt = str(shipped)
            load_weights(net, _checkpoint_path(self.camera_ckpt))
        return net

    def _embed_tiles(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of every tile of every image (T×D) and the image index of each tile.

        Tiles go through the network in chunks of exactly :data:`FORWARD_CHUNK` (the last one
        padded with blank tiles), so a tile's embedding is the same bit for bit whatever else is
        in the call: the CPU kernels choose their algorithm by batch size, and a different one
        moves the embedding by ~1e-7. With ``symmetries``, a tile's embedding is the
        re-normalised mean over its views."""
        batch = FORWARD_CHUNK
        all_tiles = [tiles(img, self.patch_size, self.max_tiles) for img in images]
        owner = np.concatenate([np.full(len(t), i, dtype=np.int64)
                                for i, t in enumerate(all_tiles)])
        stacked = np.concatenate(all_tiles) if all_tiles else np.zeros(
            (0, self.patch_size, self.patch_size, 3), np.uint8)
        out = np.zeros((len(stacked), self.net_.embedding_dim), dtype=np.float32)
        views = symmetry_views(self.symmetries)
        self.net_.eval()
        with torch.inference_mode():
            for i in range(0, len(stacked), batch):
                chunk = stacked[i : i + batch]
                n = len(chunk)
                if n < batch:
                    chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]),
                                                            chunk.dtype)])
                for k in views:
                    seen = chunk if k == 0 else np.stack([symmetry_view(t, k) for t in chunk])
                    out[i : i + n] += self.net_.embed(patches_to_tensor(seen)).numpy()[:n]
        if len(views) > 1:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        weight = self.effective_residual_weight
        if weight > 0:  # with symmetries, the statistics are averaged over the views too
            stats = np.mean([residual.statistics_in_chunks(
                stacked if k == 0 else np.stack([symmetry_view(t, k) for t in stacked]))
                for k in views], axis=0)
            out = residual.join(out, stats, self.residual_mean_, self.residual_std_, weight)
        return out, owner

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Per-image embedding (N×D, unit rows): tile embeddings averaged and re-normalised."""
        if not hasattr(self, "net_"):
            raise NotFittedError("this MetricAttributor is not fitted yet: call fit(...) or "
                                 "genprint.load(...)")
        tile_emb, owner = self._embed_tiles(images)
        return refs.image_embeddings(tile_emb, owner, len(images))

    def _source_distances(self, embeddings: np.ndarray) -> np.ndarray:
        return refs.source_distances(embeddings, self.references_, self.reference_sources_,
                                     len(self.classes_))

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train_images: Sequence[np.ndarray],
        train_labels: Sequence[str],
        val_images: Sequence[np.ndarray],
        val_labels: Sequence[str],
        train_origins: Sequence[str | None] | None = None,
        val_origins: Sequence[str | None] | None = None,
    ) -> MetricAttributor:
        """Train the embedding on training images; calibrate thresholds on validation images only.

        Every source needs validation images (else ``ValueError``, before any training).
        ``train_origins`` (optional, one per training image, ``None`` where unknown) splits a
        source into one training class per origin when ``origin_classes`` is on; with
        ``val_origins`` too and ``unseen_origin_thresholds`` on, a source with several origins
        gets its threshold from distances measured as if each validation image's origin were
        unseen (see :mod:`genprint.methods.metric_refs`).
        """
        self._check_params()
        if len(train_images) != len(train_labels) or len(val_images) != len(val_labels):
            raise ValueError("images and labels differ in length")
        if train_origins is not None and len(train_origins) != len(train_labels):
            raise ValueError("train_origins and train_labels differ in length")
        if val_origins is not None and len(val_origins) != len(val_labels):
            raise ValueError("val_origins and val_labels differ in length")
        check_rgb_uint8(train_images, "training")
        check_rgb_uint8(val_images, "validation")
        classes = sorted(set(train_labels))
        if not classes:
            raise ValueError("no training images")
        check_training_labels(classes, list(val_labels))
        if len(classes) < 2:
            raise ValueError("metric learning needs at least 2 known sources")
        # a refit starts afresh: an earlier fit's enrolments, recalibrations and pictures are
        # not its own (what the caller recorded about the data before the fit is kept); they are
        # dropped once the fit has succeeded
        earlier = {k: v for k, v in getattr(self, "training_info_", {}).items()
                   if k not in ("enrolled", "recalibrated")}
        t0 = time.perf_counter()
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c] for c in train_labels], dtype=np.int64)
        y_loss, loss_parent = training_classes(
            train_labels, train_origins if self.origin_classes else None, index)
        loss_images: Sequence[np.ndarray] = train_images
        n_loss = len(loss_parent)
        if self.pseudo_sources:
            per = int(np.median(np.bincount(y)))  # as many images as a typical source
            extra, extra_y = pseudo_source_images(train_images, self.pseudo_sources, per,
                                                  self.seed, self.pseudo_kind)
            loss_images = [*train_images, *extra]
            y_loss = np.r_[y_loss, n_loss + extra_y]
            n_loss += self.pseudo_sources
        if self.effective_residual_weight > 0:  # statistics of the tiles the embedding sees
            self.residual_mean_, self.residual_std_ = residual.standardiser(
                residual.statistics_in_chunks(np.concatenate(
                    [tiles(img, self.patch_size, self.max_tiles) for img in train_images])))
        generated = None  # per loss class: a generator (not the source named real, as in the
        if self.real_gen_weight and REAL in classes:  # built-in world's manifests)?
            generated = np.r_[np.asarray(loss_parent) != classes.index(REAL),
                              np.ones(n_loss - len(loss_parent), dtype=bool)]
        self.net_ = self._initial_network()
        bundle, history = train_metric(
            self.net_, loss_images, y_loss, n_loss, loss=self.loss, epochs=self.epochs,
            batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            proxy_lr_mult=self.proxy_lr_mult, crops_per_image=self.crops_per_image,
            seed=self.seed, on_epoch=self.on_epoch, symmetries=self.symmetries,
            augment=self.augment, generated=generated, real_gen_weight=float(
                self.real_gen_weight) if generated is not None else 0.0)
        self.classes_ = classes
        self.model_sha256_ = None  # refitted: no saved model holds it until saved
        unseen = None
        if self.references == "proxies":
            self.references_ = proxies(bundle)[: len(loss_parent)]  # not the pseudo-sources'
            self.reference_sources_ = loss_parent
            # only the training images kept as samples need embedding
            sub = refs.sample_subset(y, refs.SAMPLES_PER_SOURCE, self.seed)
            train_emb, train_y = self.embed([train_images[i] for i in sub]), y[sub]
        else:
            train_emb, train_y = self.embed(train_images), y
            self.references_, self.reference_sources_ = refs.class_references(
                train_emb, y, len(classes), self.refs_per_class, self.seed)
            if (self.unseen_origin_thresholds and train_origins is not None
                    and val_origins is not None):
                unseen = (train_emb, y, train_origins, val_origins)
        self.thresholds_, val_emb, val_y = self._calibrate(val_images, val_labels, unseen)
        emb, lab = np.concatenate([train_emb, val_emb]), np.r_[train_y, val_y]
        is_val = np.r_[np.zeros(len(train_y), bool), np.ones(len(val_y), bool)]
        keep = refs.sample_subset(lab, refs.SAMPLES_PER_SOURCE, self.seed, prefer=is_val)
        self.samples_ = emb[keep].astype(np.float32)
        self.sample_sources_ = lab[keep].astype(np.int64)
        # which samples are validation images: the enrolment threshold's factor is simulated
        # on them (refs.enrolment_scale), so they are kept first
        self.sample_validation_ = is_val[keep]
        self.enrolment_scale_cache_ = {}  # factors simulated on the samples of an earlier fit
        self.separators_ = np.full((len(classes), emb.shape[1] + 1), np.nan)
        self.training_fingerprints_, self.model_sha256_ = None, None
        self.training_info_ = {
            **earlier,
            "loss": self.loss, "init": self.init, **_checkpoint_provenance(self.camera_ckpt),
            "loss_classes": n_loss, "pseudo_sources": self.pseudo_sources,
            "pseudo_kind": self.pseudo_kind, "residual_weight": self.effective_residual_weight,
            "augment": self.augment, "real_gen_weight": float(self.real_gen_weight)
            if generated is not None else 0.0,
            "reference_points": self.references, "epochs": self.epochs,
            "loss_history": [round(v, 5) for v in history],
            "train_seconds": round(time.perf_counter() - t0, 1),
            "threshold_rule": f"per source, the distance accepting {self.target_accept:.0%} of "
                              "its validation images",
            "val_closed_set_accuracy": self.val_accuracy_,
            "thresholds_for_unseen_origins": self.unseen_origin_sources_,
        }
        return self

    def _calibrate(self, val_images: Sequence[np.ndarray], val_labels: Sequence[str],
                   unseen: tuple | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Thresholds from validation images, with the validation embeddings and their source
        index; ``unseen`` = (training embeddings, their source index, training origins,
        validation origins) switches on the unseen-origin rule."""
        known = [i for i, lab in enumerate(val_labels) if lab in self.classes_]
        emb = self.embed([val_images[i] for i in known])
        labels = np.array([self.classes_.index(val_labels[i]) for i in known], dtype=np.int64)
        dist = self._source_distances(emb)
        self.val_accuracy_ = float(np.mean(dist.argmin(axis=1) == labels))
        own = dist[np.arange(len(labels)), labels]
        self.unseen_origin_sources_: list[str] = []
        if unseen is not None:
            train_emb, train_y, train_origins, val_origins = unseen
            v_orig = [val_origins[i] for i in known]
            for c, name in enumerate(self.classes_):
                mask = labels == c
                mine = np.flatnonzero(train_y == c)
                d = refs.unseen_origin_distances(
                    emb[mask], [v_orig[i] for i in np.flatnonzero(mask)], train_emb[mine],
                    [train_origins[i] for i in mine], self.refs_per_class, self.seed)
                if d is not None:
                    own[mask] = d
                    self.unseen_origin_sources_.append(name)
        thresholds = -refs.calibrate_thresholds(own, labels, len(self.classes_),
                                                 self.target_accept)
        return thresholds, emb, labels

    # ------------------------------------------------------------------ inference
    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        self._check_fitted()
        tile_emb, owner = self._embed_tiles(images)
        image_emb = refs.image_embeddings(tile_emb, owner, len(images))
        scores = -self._source_distances(image_emb)
        tile_votes = self._source_distances(tile_emb).argmin(axis=1)
        separators = getattr(self, "separators_", None)
        margins = (refs.separator_margins(image_emb, separators)
                   if separators is not None and not np.isnan(separators).all() else None)
        out = []
        for i in range(len(images)):
            mine = tile_votes[owner == i]
            agreement = float(np.mean(mine == scores[i].argmax()))
            out.append(Prediction(scores=scores[i], n_tiles=len(mine), tile_agreement=agreement,
                                  margins=None if margins is None else margins[i]))
        return out

    def decide(self, prediction: Prediction) -> tuple[int, float, float, bool]:
        """The nearest source, accepted within its threshold; enrolled sources only *add*
        (:func:`genprint.methods.metric_refs.decide_sources`): an image the trained sources
        accept is never made ``unknown`` by an enrolment, and an enrolled source also takes the
        images its separator claims (then the score may lie outside its threshold)."""
        mask = self._enrolled_mask()
        if not mask.any():
            return super().decide(prediction)
        margins = None if prediction.margins is None else prediction.margins[None, :]
        label = int(refs.decide_sources(-np.asarray(prediction.scores)[None, :],
                                        -np.asarray(self.thresholds_), mask, margins)[0])
        if label < 0:
            return super().decide(prediction)
        return (label, float(prediction.scores[label]), float(self.thresholds_[label]), False)

    def _enrolled_mask(self, *extra: str) -> np.ndarray:
        """Which of ``classes_`` are enrolled (booleans), counting ``extra`` names as enrolled."""
        return np.isin(self.classes_, [*self.enrolled_sources, *extra])

    @property
    def enrolled_sources(self) -> set[str]:
        """Sources added by :meth:`enroll` (not trained)."""
        # (NFC, as classes_ are on load: an older genprint kept names as typed)
        return {unicodedata.normalize("NFC", r["source"])
                for r in getattr(self, "training_info_", {}).get("enrolled", [])}

    # ------------------------------------------------------------------ enrolment
    def enroll(self, images: Sequence[np.ndarray], source: str, separator: bool = False,
               threshold_rule: str = "scaled-mean") -> dict[str, Any]:
        """Add ``source`` from ≥ 1 images without retraining; returns what was recorded.
        A picture given more than once (the same pixels) is used once (``n_repeated`` counts
        the others), so it cannot inflate the leave-one-out self-check.

        Reference points, threshold and separator follow :mod:`genprint.methods.metric_refs`;
        the other sources' reference points, thresholds and separators are left exactly as they
        were. With ``separator`` (opt-in), the new source also gets a linear separator; a model
        saved without sample embeddings (before they were kept) cannot fit one, and the record
        says so. The new images join the stored samples either way, so that a later enrolment
        can separate from this source.

        ``threshold_rule`` (with 3 images up to as many as make the quantile the largest of
        their leave-one-out distances, 38 at 95%): ``"scaled-mean"`` (default) or
        ``"quantile"``, the rule before it (:mod:`genprint.methods.metric_refs`, docs/metric.md
        "Enrolment").
        """
        if threshold_rule not in ENROL_THRESHOLD_RULES:
            raise ValueError(f"unknown enrolment threshold rule {threshold_rule!r}: choose from "
                             f"{', '.join(ENROL_THRESHOLD_RULES)}")
        self._check_fitted()
        check_source_names([source])
        source = unicodedata.normalize("NFC", source)  # one spelling of "ü" (see io.sources)
        if source in {unicodedata.normalize("NFC", c) for c in self.classes_}:
            raise ValueError(f"source {source!r} is already known to this model")
        if len(images) == 0:
            raise ValueError("enrolment needs at least one image")
        check_rgb_uint8(images, "enrolment")
        flat = [i for i, img in enumerate(images) if is_uniform(img)]
        if flat:
            raise ValueError(f"enrolment image {flat[0]} ({len(flat)} in all) is of one colour: "
                             f"{NO_CONTENT_REASON}; leave such images out")
        fitted_on = self._fitted_on()
        known = [] if fitted_on is None else [i for i, img in enumerate(images)
                                              if img in fitted_on]
        if known:
            raise EnrolmentConflict(known, (
                f"{len(known)} of the {len(images)} enrolment image(s) (first: image "
                f"{known[0]}) have the same pixels as pictures this model was fitted on or "
                f"enrolled, each already one of its sources ({', '.join(self.classes_)}): one "
                f"picture cannot come from two sources; leave them out to enrol {source!r}"))
        model_before = getattr(self, "model_sha256_", None)
        first: dict[bytes, np.ndarray] = {}  # a picture given twice counts once
        for img in images:
            first.setdefault(fingerprint(img), img)
        keys = list(first)
        n_repeated = len(images) - len(keys)
        images = list(first.values())
        tile_emb, owner = self._embed_tiles(images)
        image_emb = refs.image_embeddings(tile_emb, owner, len(images))
        points = refs.enrolment_references(tile_emb, owner, self.refs_per_class, self.seed)
        scale, scale_draws, scale_note = (
            self.enrolment_scale(len(images)) if threshold_rule == "scaled-mean"
            or len(images) < 3 else (None, 0, "the quantile rule was asked for"))
        # the self-check re-enrols n − 1 images, by the same rule (half the simulation budget:
        # the check is read as ± 0.1 anyway)
        check_scale = (self.enrolment_scale(len(images) - 1, refs.SCALE_FIT_BUDGET // 2)[0]
                       if scale is not None and len(images) <= MAX_CHECK_IMAGES else None)
        dist, rule = refs.enrolment_threshold(
            tile_emb, owner, image_emb, self.refs_per_class, self.seed, self.target_accept,
            -np.asarray(self.thresholds_), scale)
        k = len(self.classes_)
        warnings = self._narrow_warning(dist)
        samples = getattr(self, "samples_", None)
        check = leave_one_out_check(
            tile_emb, owner, image_emb, k=self.refs_per_class, seed=self.seed,
            target_accept=self.target_accept, references=self.references_,
            reference_sources=self.reference_sources_, thresholds=-np.asarray(self.thresholds_),
            enrolled=self._enrolled_mask(),
            classes=list(self.classes_),
            separators=getattr(self, "separators_", None),
            samples=samples if separator else None, scale=check_scale)
        sep = np.full(image_emb.shape[1] + 1, np.nan)
        if not separator:
            sep_rule = "none (off by default)"
        elif samples is None:
            sep_rule = "none: the model keeps no sample embeddings (saved by an older genprint)"
        else:
            sep = refs.fit_separator(samples, image_emb)
            sep_rule = (f"logistic regression (C = {refs.SEPARATOR_C:g}) against {len(samples)} "
                        "sample embeddings of the other sources")
        if samples is not None:  # models saved before samples were kept stay without them
            keep = refs.sample_subset(np.zeros(len(image_emb), np.int64),
                                      refs.SAMPLES_PER_SOURCE, self.seed)
            self.samples_ = np.concatenate([samples, image_emb[keep]]).astype(np.float32)
            self.sample_sources_ = np.concatenate(
                [self.sample_sources_, np.full(len(keep), k, dtype=np.int64)])
            if getattr(self, "sample_validation_", None) is not None:  # not validation images
                self.sample_validation_ = np.r_[self.sample_validation_, np.zeros(len(keep), bool)]
            self.separators_ = np.concatenate([self.separators_, sep[None, :]])
        self.references_ = np.concatenate([self.references_, points]).astype(np.float32)
        self.reference_sources_ = np.concatenate(
            [self.reference_sources_, np.full(len(points), k, dtype=np.int64)])
        self.classes_ = [*self.classes_, source]
        self.thresholds_ = np.append(np.asarray(self.thresholds_, dtype=np.float64), -dist)
        self.model_sha256_ = None  # no saved model holds this one until it is saved
        if samples is not None:
            check.update(known_overlap(
                self.samples_, self.sample_sources_, references=self.references_,
                reference_sources=self.reference_sources_,
                thresholds=-np.asarray(self.thresholds_),
                enrolled=self._enrolled_mask(source),
                separators=self.separators_, classes=list(self.classes_), new=k))
        record = {"source": source, "enrolled_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime()),
                  "model_sha256_before": model_before,
                  "image_fingerprints": [k.hex() for k in keys],
                  "n_images": len(images), "n_repeated": n_repeated,
                  "n_tiles": len(tile_emb),
                  "n_reference_points": len(points), "threshold": -dist, "threshold_rule": rule,
                  "threshold_scale": scale, "threshold_scale_draws": scale_draws,
                  "threshold_scale_note": scale_note, "loo_threshold_scale": check_scale,
                  "separator": sep_rule, **check, "warnings": warnings}
        if self.training_fingerprints_ is not None:  # the enrolled pictures are seen too
            self.training_fingerprints_ = np.unique(
                np.concatenate([self.training_fingerprints_, as_rows(keys)]), axis=0)
        info = dict(getattr(self, "training_info_", {}))
        info["enrolled"] = [*info.get("enrolled", []), record]
        self.training_info_ = info
        return record

    def _narrow_warning(self, dist: float) -> list[str]:
        """The warning of an enrolled threshold far tighter than every trained source's
        (:data:`NARROW_SHARE`), else none."""
        trained = [-float(t) for c, t in zip(self.classes_, self.thresholds_, strict=True)
                   if c not in self.enrolled_sources]
        if not trained or dist >= NARROW_SHARE * min(trained):
            return []
        text = (f"the new source's region is far narrower than any trained source's "
                f"(distance {dist:.4f} against {min(trained):.3f} for the tightest): the "
                "enrolment images are (almost) the same where the model looks (one picture "
                "re-saved or cropped, near copies), so it will recognise little beyond them "
                "and the leave-one-out check overstates its recall; enrol different pictures "
                "of the source")
        return [text]

    def enrolment_scale(self, n_images: int, fit_budget: int = refs.SCALE_FIT_BUDGET
                        ) -> tuple[float | None, int, str]:
        """The factor of the scaled-mean enrolment rule for ``n_images`` images, simulated on
        the trained sources' stored validation samples (:func:`refs.enrolment_scale`), the
        number of simulated enrolments, and a note; ``None`` when the rule is not used (the
        note says why; with ≥ 3 images the quantile of the leave-one-out distances is used
        instead, with fewer the leave-one-tile-out or median rule). The simulation is seeded,
        so the model keeps what it measured (``enrolment_scale_cache_``, saved in the card,
        at most :data:`SCALE_CACHE_SIZE`) and answers the same question again without it."""
        flags = getattr(self, "sample_validation_", None)
        if n_images < 3:
            return None, 0, "fewer than 3 images: no leave-one-image-out distances"
        if acceptance_rank(n_images, self.target_accept) < n_images:
            return None, 0, (f"with {n_images} images the {self.target_accept:.0%} quantile of "
                             "their leave-one-out distances is no longer their largest, and is "
                             "used")
        if flags is None:
            return None, 0, ("the model does not mark its validation samples (saved by an older "
                             "genprint; retrain to use the scaled mean)")
        trained = flags & ~self._enrolled_mask()[self.sample_sources_]
        # the simulation is seeded: the same samples and settings give the same factor, so it
        # is kept (and saved) for the next enrolment of as many images
        digest = hashlib.sha256(np.ascontiguousarray(self.samples_[trained]).tobytes()
                                + self.sample_sources_[trained].astype(np.int64).tobytes())
        # the simulation's own settings and genprint's version too: a later release, whose
        # simulation may differ, measures again
        key = (f"{n_images}|{fit_budget}|{self.refs_per_class}|{self.seed}|"
               f"{self.target_accept!r}|{digest.hexdigest()[:16]}|{refs.SCALE_DRAWS}|"
               f"{refs.SCALE_MIN_REST}|{refs.SCALE_MIN_SPREAD!r}|{__version__}")
        cache = getattr(self, "enrolment_scale_cache_", None)
        if cache is None:  # an unfitted model, or one built before factors were kept
            cache = self.enrolment_scale_cache_ = {}
        if key in cache:
            scale, draws, why = cache[key]
        else:
            scale, draws, why = refs.enrolment_scale(
                self.samples_[trained], self.sample_sources_[trained], n_images,
                self.refs_per_class, self.seed, self.target_accept, fit_budget=fit_budget)
            if len(cache) >= SCALE_CACHE_SIZE:  # the first in order goes: only a later miss
                cache.pop(next(iter(cache)))
            cache[key] = (None if scale is None else float(scale), int(draws), str(why))
        if scale is None:
            return None, 0, why
        return scale, draws, (f"{draws} simulated enrolments of {n_images} validation images "
                              f"of the trained sources ({why}) accept "
                              f"{self.target_accept:.0%} of the rest on average")

    # ------------------------------------------------------------------ persistence
    def _to_contents(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
        card = {
            # the weight the model was built with, not None: a later default cannot change it
            "params": {**self.get_params(), "camera_ckpt": _portable(self.camera_ckpt),
                       "residual_weight": self.effective_residual_weight},
            "backbone": self.net_.card(),
            "reference_points": {"kind": self.references,
                                 "per_source": np.bincount(self.reference_sources_,
                                                           minlength=len(self.classes_)).tolist()},
            "score": "minus the Euclidean distance between unit embeddings to the source's nearest "
                     "reference point (higher = closer); threshold = minus the calibrated distance",
            "enrolment_scale_cache": {k: list(v) for k, v in
                                      getattr(self, "enrolment_scale_cache_", {}).items()},
            "decision": "the nearest source if within its threshold, else unknown; enrolled "
                        "sources only add (they take the images they accept and are skipped "
                        "for the others) and also take the images their separator claims",
        }
        arrays = {"references": self.references_.astype(np.float32),
                  "reference_sources": self.reference_sources_.astype(np.int64)}
        if self.effective_residual_weight > 0:
            arrays.update(residual_mean=self.residual_mean_.astype(np.float64),
                          residual_std=self.residual_std_.astype(np.float64))
        if getattr(self, "samples_", None) is not None:
            arrays.update(samples=self.samples_.astype(np.float32),
                          sample_sources=self.sample_sources_.astype(np.int64),
                          separators=np.asarray(self.separators_, dtype=np.float64))
            if getattr(self, "sample_validation_", None) is not None:
                arrays["sample_validation"] = self.sample_validation_.astype(np.uint8)
        return card, state_tensors(self.net_), arrays

    @classmethod
    def _from_contents(cls, contents: ModelContents) -> MetricAttributor:
        card = contents.card
        # models saved before origin classes existed were trained one class per source
        # (and before residual statistics existed, with the embedding alone)
        model = cls(**{"origin_classes": False, "unseen_origin_thresholds": False,
                       "residual_weight": 0.0, **card.get("params", {})})
        try:
            symmetry_views(model.symmetries)
            check_augment(model.augment)
        except ValueError as exc:
            raise ModelFormatError(str(exc)) from None
        arch = card.get("backbone", {}).get("architecture")
        if not isinstance(arch, dict):
            raise ModelFormatError("the card holds no forensic-cnn architecture")
        model.net_ = ForensicCNN(ForensicCNNConfig.from_dict(arch))
        state = {k[len("net."):]: torch.from_numpy(v.copy())
                 for k, v in contents.tensors.items() if k.startswith("net.")}
        try:
            model.net_.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelFormatError(f"weights do not fit the architecture: {exc}") from None
        model.net_.eval()
        model.references_ = contents.arrays["references"].astype(np.float32)
        if _card_residual_weight(model) > 0:
            model.residual_mean_, model.residual_std_ = _residual_standardiser(contents, model)
        expected_dim = model.net_.embedding_dim + (
            residual.N_FEATURES if model.effective_residual_weight > 0 else 0)
        if model.references_.ndim != 2 or model.references_.shape[1] != expected_dim:
            raise ModelFormatError(
                f"the reference points have {model.references_.shape[-1]} dimensions where the "
                f"network's embedding ({model.net_.embedding_dim}) joined to residual statistics "
                f"of weight {model.effective_residual_weight:g} has {expected_dim}")
        if not np.isfinite(model.references_).all():
            raise ModelFormatError("a reference point is not finite (NaN or infinite)")
        sources = contents.arrays["reference_sources"]
        if not np.issubdtype(sources.dtype, np.integer):
            raise ModelFormatError(f"reference_sources must hold source numbers (integers), "
                                   f"not {sources.dtype}")
        model.reference_sources_ = sources.astype(np.int64)
        # composed (NFC) here already, as enrolled_sources are: the enrolled mask below needs it
        model.classes_ = [unicodedata.normalize("NFC", c) for c in card["classes"]]
        model.thresholds_ = np.asarray(card["thresholds"], dtype=np.float64)
        model.training_info_ = dict(card.get("training", {}))
        if (len(model.thresholds_) != len(model.classes_)
                or len(model.references_) != len(model.reference_sources_)
                or set(model.reference_sources_.tolist()) != set(range(len(model.classes_)))):
            raise ModelFormatError("classes, thresholds and reference points disagree in the card")
        if np.isnan(model.thresholds_).any():
            raise ModelFormatError("a threshold is not a number (NaN)")
        # enrolled sources are the last ones, in their order (records of sources the model no
        # longer has were left by a refit in an earlier genprint, and are harmless)
        named = [unicodedata.normalize("NFC", r["source"])
                 for r in model.training_info_.get("enrolled", [])
                 if isinstance(r, dict) and isinstance(r.get("source"), str)]
        enrolled = [name for name in named if name in model.classes_]
        if enrolled != model.classes_[len(model.classes_) - len(enrolled):]:
            raise ModelFormatError("the card's enrolment records name trained sources, or not "
                                   "its last sources in the order they were enrolled")
        model.samples_, model.sample_sources_, model.separators_ = _samples_of(contents, model)
        model.sample_validation_ = _sample_validation_of(contents, model)
        model.enrolment_scale_cache_ = _scale_cache_of(card)
        return model


SCALE_CACHE_SIZE = 16
"""Enrolment-rule factors a model keeps (:meth:`MetricAttributor.enrolment_scale`; one per
number of images, and one for the self-check's n − 1)."""

NARROW_SHARE = 0.25
"""An enrolled source whose threshold distance is below this share of the tightest trained
source's is flagged (``warnings`` of its record): its images are (almost) one picture where the
model looks. On the built-in bench the tightest trained source's distance is 0.10 and enrolled
sources' from 10 different pictures 0.24–0.92; identical tiles give 0."""

ENROL_THRESHOLD_RULES = ("scaled-mean", "quantile")
"""The enrolment threshold rules :meth:`MetricAttributor.enroll` takes (the first is the
default)."""

SHIPPED_CAMERA = "shipped"
"""How a card names the camera checkpoint shipped with genprint (any machine resolves it)."""


def _checkpoint_path(ckpt: str) -> str:
    """The directory a ``camera_ckpt`` parameter refers to (``shipped`` = the packaged one)."""
    if ckpt == SHIPPED_CAMERA:
        from genprint.methods.camera_pretrain import SHIPPED_CHECKPOINT

        return str(SHIPPED_CHECKPOINT)
    return ckpt


def _portable(ckpt: str | None) -> str | None:
    """``camera_ckpt`` as a card records it: ``shipped`` for the packaged checkpoint, else the
    directory's name only, so that no machine's folder layout is written into a model that may
    be shared (the checkpoint's hash, in the training record, identifies it)."""
    if ckpt is None or ckpt == SHIPPED_CAMERA:
        return ckpt
    from genprint.methods.camera_pretrain import SHIPPED_CHECKPOINT

    path = Path(ckpt).resolve()
    return SHIPPED_CAMERA if path == SHIPPED_CHECKPOINT else path.name


def _checkpoint_provenance(ckpt: str | None) -> dict[str, Any]:
    """The training record's ``camera_ckpt`` (portable name) and ``camera_ckpt_sha256`` (hash
    of the checkpoint's ``card.json``, which lists the hash of each of its files)."""
    if ckpt is None:
        return {"camera_ckpt": None}
    card = Path(_checkpoint_path(ckpt)) / "card.json"
    digest = sha256_file(card) if card.is_file() else None
    return {"camera_ckpt": _portable(ckpt), "camera_ckpt_sha256": digest}


def _card_residual_weight(model: MetricAttributor) -> float:
    """The loaded model's residual weight, checked (``ModelFormatError`` if malformed)."""
    w = model.residual_weight
    if weight_problem(w):
        raise ModelFormatError(f"residual_weight in the card is {w!r}; it must be a number from "
                               f"0 to {MAX_RESIDUAL_WEIGHT:g}")
    if model.effective_residual_weight > 0 and model.references == "proxies":
        raise ModelFormatError("the card joins residual statistics to proxy reference points, "
                               "which no fit makes")
    return model.effective_residual_weight


def _residual_standardiser(contents: ModelContents, model: MetricAttributor
                           ) -> tuple[np.ndarray, np.ndarray]:
    """The stored mean and std of the residual statistics, checked against the model."""
    if "residual_mean" not in contents.arrays or "residual_std" not in contents.arrays:
        raise ModelFormatError("the model joins residual statistics but does not hold their "
                               "mean and std")
    mean = contents.arrays["residual_mean"].astype(np.float64)
    std = contents.arrays["residual_std"].astype(np.float64)
    expected = (residual.N_FEATURES,)
    for name, values in (("residual_mean", mean), ("residual_std", std)):
        if values.shape != expected or not np.all(np.isfinite(values)):
            raise ModelFormatError(f"{name} must hold {residual.N_FEATURES} finite numbers")
    if not np.all(std > 0):
        raise ModelFormatError("residual_std must be positive")
    return mean, std


def _scale_cache_of(card: dict[str, Any]) -> dict[str, tuple[float | None, int, str]]:
    """The enrolment-rule factors a card keeps (none for models saved before they were kept),
    checked: each is a factor (or null), a number of draws and a note."""
    cache = card.get("enrolment_scale_cache", {})
    if not isinstance(cache, dict):
        raise ModelFormatError("enrolment_scale_cache in the card is not an object")
    out = {}
    for key, value in cache.items():
        if not (isinstance(value, list) and len(value) == 3
                and (value[0] is None or (isinstance(value[0], float) and value[0] >= 0
                                          and np.isfinite(value[0])))
                and isinstance(value[1], int) and isinstance(value[2], str)):
            raise ModelFormatError(f"enrolment_scale_cache[{key!r}] in the card is not "
                                   "[factor, draws, note]")
        out[str(key)] = (value[0], value[1], value[2])
    return out


def _samples_of(contents: ModelContents, model: MetricAttributor
                ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The stored sample embeddings, their sources and the separators, checked (``None`` for
    models saved before they were kept)."""
    names = ("samples", "sample_sources", "separators")
    present = [n in contents.arrays for n in names]
    if not any(present):
        return None, None, None
    if not all(present):
        raise ModelFormatError("the model holds only some of samples, sample_sources, separators")
    samples = contents.arrays["samples"].astype(np.float32)
    sources = contents.arrays["sample_sources"].astype(np.int64)
    seps = contents.arrays["separators"].astype(np.float64)
    dim = model.references_.shape[1]
    n = len(model.classes_)
    if (samples.ndim != 2 or samples.shape[1] != dim or sources.shape != (len(samples),)
            or seps.shape != (n, dim + 1) or (len(sources) and not 0 <= sources.min() <= sources.max() < n)
            or not np.all(np.isfinite(samples))):
        raise ModelFormatError("sample embeddings or separators do not fit the model")
    enrolled = model._enrolled_mask()
    rows_ok = np.isfinite(seps).all(axis=1) | np.isnan(seps).all(axis=1)
    if not rows_ok.all() or any(not e and np.isfinite(r).all() for e, r in zip(enrolled, seps, strict=True)):
        raise ModelFormatError("a separator is malformed or belongs to a trained source")
    return samples, sources, seps


def _sample_validation_of(contents: ModelContents, model: MetricAttributor) -> np.ndarray | None:
    """Which stored samples are validation images (``None`` for models saved before this was
    kept), checked."""
    if "sample_validation" not in contents.arrays:
        return None
    flags = contents.arrays["sample_validation"]
    if model.samples_ is None or flags.shape != (len(model.samples_),) or not np.isin(
            flags, (0, 1)).all():
        raise ModelFormatError("sample_validation does not fit the sample embeddings")
    return flags.astype(bool)
