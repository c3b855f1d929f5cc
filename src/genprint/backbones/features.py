"""Batched feature extraction with an on-disk cache keyed by (backbone, layers, image sha256).

:func:`extract_features` centre-crops every image to the backbone's input size, runs the
backbone in batches and returns the features of **every** layer (one N×D array per layer, float32).
With a :class:`FeatureCache`, images already seen by the same backbone are not recomputed.

Cache layout (``~/.cache/genprint/features`` by default, or ``$GENPRINT_CACHE/features``)::

    ROOT/<key>/meta.json            the backbone card, layer names, weights identity
    ROOT/<key>/shard-<id>/keys.npy  sha256 (hex) of each image's pixels (shape + uint8 bytes)
    ROOT/<key>/shard-<id>/NN.npy    features of layer NN for those images

``<key>`` is a hash of the backbone card (name, preprocessing, input size), its weights identity
and the layer names. Each shard is written in a temporary folder and renamed into place, so a
crash or a concurrent writer never leaves a partial shard; two processes computing the same image
only store it twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from genprint.backbones.base import Backbone
from genprint.backbones.common import to_batch
from genprint.backbones.resolve import weights_id


def default_cache_dir() -> Path:
    """``$GENPRINT_CACHE/features``, else ``$XDG_CACHE_HOME/genprint/features`` (~/.cache)."""
    if os.environ.get("GENPRINT_CACHE"):
        return Path(os.environ["GENPRINT_CACHE"]) / "features"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "genprint" / "features"


def image_key(image: np.ndarray) -> str:
    """sha256 of an image's pixels (its shape and uint8 bytes)."""
    digest = hashlib.sha256(repr(tuple(image.shape)).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def backbone_key(backbone: Backbone) -> str:
    """The cache folder name of a backbone: hash of its card and weights identity."""
    payload = json.dumps({"card": backbone.card(), "weights": weights_id(backbone)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class FeatureCache:
    """Per-image features of one backbone, stored as npy shards (see module doc)."""

    def __init__(self, backbone: Backbone, root: str | os.PathLike[str] | None = None) -> None:
        self.layers = list(backbone.layer_names())
        self.folder = Path(root) if root is not None else default_cache_dir()
        self.folder = self.folder / backbone_key(backbone)
        self._meta = {"backbone": backbone.card(), "weights": weights_id(backbone),
                      "layers": self.layers}
        self._index: dict[str, tuple[Path, int]] | None = None

    def _load_index(self) -> dict[str, tuple[Path, int]]:
        if self._index is None:
            self._index = {}
            if self.folder.is_dir():
                for shard in sorted(self.folder.glob("shard-*")):
                    try:
                        keys = np.load(shard / "keys.npy", allow_pickle=False)
                    except (OSError, ValueError):
                        continue  # unreadable shard: ignored, its images are recomputed
                    for row, key in enumerate(keys):
                        self._index[key.decode()] = (shard, row)
        return self._index

    def get(self, keys: Sequence[str]) -> dict[str, list[np.ndarray]]:
        """Features of the cached ``keys`` (missing keys are simply absent from the result)."""
        index = self._load_index()
        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for key in keys:
            if key in index:
                shard, row = index[key]
                by_shard.setdefault(shard, []).append((key, row))
        found: dict[str, list[np.ndarray]] = {}
        for shard, wanted in by_shard.items():
            try:
                arrays = [np.load(shard / f"{k:02d}.npy", mmap_mode="r")
                          for k in range(len(self.layers))]
            except (OSError, ValueError):
                continue
            for key, row in wanted:
                found[key] = [np.array(a[row]) for a in arrays]
        return found

    def put(self, keys: Sequence[str], feats: Sequence[np.ndarray]) -> None:
        """Store features (one N×D array per layer) of the images ``keys``, atomically."""
        if not keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "meta.json"
        if not meta.exists():
            tmp_meta = self.folder / f".meta-{uuid.uuid4().hex}.tmp"
            tmp_meta.write_text(json.dumps(self._meta, indent=2, default=str), encoding="utf-8")
            os.replace(tmp_meta, meta)
        tmp = Path(tempfile.mkdtemp(prefix=".shard-", dir=self.folder))
        np.save(tmp / "keys.npy", np.array([k.encode() for k in keys], dtype="S64"))
        for k, array in enumerate(feats):
            np.save(tmp / f"{k:02d}.npy", np.ascontiguousarray(array, dtype=np.float32))
        final = self.folder / f"shard-{uuid.uuid4().hex}"
        os.replace(tmp, final)
        index = self._load_index()
        for row, key in enumerate(keys):
            index[key] = (final, row)


def extract_features(
    backbone: Backbone,
    images: Sequence[np.ndarray],
    *,
    batch_size: int = 64,
    cache: FeatureCache | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Features of every layer for (H, W, 3) uint8 images: one (N, D_layer) float32 per layer.

    Images are centre-cropped to ``backbone.preprocessing.input_size`` (never resized); smaller
    ones are padded first if the preprocessing says so (``extra["pad"]``), else refused.
    ``on_progress(n)`` is called as ``n`` more images are done (cached ones at once).
    """
    n_layers = len(backbone.layer_names())
    size = backbone.preprocessing.input_size
    pad = backbone.preprocessing.extra.get("pad", "none")
    keys = [image_key(img) for img in images] if cache is not None else []
    known = cache.get(keys) if cache is not None else {}
    todo = [i for i in range(len(images)) if cache is None or keys[i] not in known]
    if on_progress and len(images) - len(todo):
        on_progress(len(images) - len(todo))
    computed: dict[int, list[np.ndarray]] = {}
    backbone.eval()
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        with torch.no_grad():
            outs = backbone.forward_features(to_batch([images[i] for i in chunk], size, pad))
        arrays = [o.detach().cpu().float().numpy() for o in outs]
        if len(arrays) != n_layers:
            raise ValueError(f"backbone {backbone.name} returned {len(arrays)} feature tensors "
                             f"for {n_layers} layer names")
        if cache is not None:
            cache.put([keys[i] for i in chunk], arrays)
        for j, i in enumerate(chunk):
            computed[i] = [a[j] for a in arrays]
        if on_progress:
            on_progress(len(chunk))
    rows = [known[keys[i]] if i not in computed else computed[i] for i in range(len(images))]
    if not rows:
        dims = [0] * n_layers
        return [np.zeros((0, d), dtype=np.float32) for d in dims]
    return [np.stack([r[k] for r in rows]).astype(np.float32, copy=False)
            for k in range(n_layers)]
