"""Fitting any attributor on labelled items (files), with bad files reported, not fatal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genprint.io.batches import load_items
from genprint.io.images import ImageError
from genprint.io.sources import Item
from genprint.methods.base import Attributor


def fit_on_items(
    attributor: Attributor, train: Sequence[Item], val: Sequence[Item]
) -> list[tuple[Path, ImageError]]:
    """Read the images of ``train`` and ``val`` and call ``attributor.fit`` on them.

    Thresholds are calibrated on ``val`` only. Methods with ``uses_origins`` also get each
    item's ``origin`` (``train_origins``, ``val_origins``). Returns the files that could not be
    used (each with its reason); they are left out and the fit goes on with the rest.
    """
    tr_imgs, tr_idx, tr_err = load_items([i.path for i in train], min_size=attributor.min_size)
    va_imgs, va_idx, va_err = load_items([i.path for i in val], min_size=attributor.min_size)
    _refuse_lost_sources(train, tr_idx, tr_err, "training")
    _refuse_lost_sources(val, va_idx, va_err, "validation")
    extra = ({"train_origins": [train[k].origin for k in tr_idx],
              "val_origins": [val[k].origin for k in va_idx]}
             if attributor.uses_origins else {})
    attributor.fit(  # type: ignore[attr-defined]
        tr_imgs, [train[k].source for k in tr_idx], va_imgs, [val[k].source for k in va_idx],
        **extra)
    attributor.training_info_ = {
        **getattr(attributor, "training_info_", {}),
        "n_train": len(tr_imgs), "n_val": len(va_imgs), "n_skipped": len(tr_err) + len(va_err),
        "warnings": [*data_warnings(train, tr_idx, val, va_idx),
                     *confound_warnings([train[k] for k in tr_idx], tr_imgs)],
    }
    return tr_err + va_err


FEW_VALIDATION_IMAGES = 20
"""Below this many validation images, a source's threshold is flagged as uncertain: the 95%
acceptance is then set by a handful of images (with 19 or fewer, by the largest distance)."""


def _refuse_lost_sources(items: Sequence[Item], kept: Sequence[int],
                         errors: Sequence[tuple[Path, ImageError]], split: str) -> None:
    """A clear error when every image of a source in ``items`` was refused."""
    total = Counter(i.source for i in items)
    used = Counter(items[k].source for k in kept)
    lost = sorted(s for s in total if s is not None and used[s] == 0)
    if not lost:
        return
    by_path = {str(p): e for p, e in errors}
    parts = []
    for src in lost:
        reasons = Counter(by_path[str(i.path)].reason for i in items
                          if i.source == src and str(i.path) in by_path)
        reason = reasons.most_common(1)[0][0] if reasons else "unreadable"
        parts.append(f"{src!r} ({total[src]} file(s); e.g. {reason})")
    raise ValueError(f"every {split} image of these sources was refused: {'; '.join(parts)}. "
                     "Fix or replace the files (or choose a smaller patch size) rather than "
                     "train without them")


def data_warnings(train: Sequence[Item], train_kept: Sequence[int], val: Sequence[Item],
                  val_kept: Sequence[int]) -> list[str]:
    """What a user should know about the data a model was fitted on: sources that lost most of
    their files, and thresholds resting on few validation images."""
    out = []
    for split, items, kept in (("training", train, train_kept), ("validation", val, val_kept)):
        total = Counter(i.source for i in items)
        used = Counter(items[k].source for k in kept)
        for src in sorted(s for s in total if s is not None):
            if 0 < used[src] < total[src] / 2:
                out.append(f"{src}: only {used[src]} of its {total[src]} {split} images could be "
                           "used (see the skipped files)")
    used_val = Counter(val[k].source for k in val_kept)
    few = sorted((n, s) for s, n in used_val.items() if s is not None and n < FEW_VALIDATION_IMAGES)
    if few:
        listed = ", ".join(f"{s} ({n})" for n, s in few)
        out.append(f"thresholds rest on fewer than {FEW_VALIDATION_IMAGES} validation images for: "
                   f"{listed}; how often such a source's new images are accepted is uncertain "
                   "(add images, or a larger --val-fraction)")
    return out


def confound_warnings(items: Sequence[Item], images: Sequence[np.ndarray]) -> list[str]:
    """Warnings when the sources differ by file format or image size: a model can learn such a
    difference instead of the source (the built-in benchmark gives every image the same final
    step for that reason). Format = the file's extension; size = height × width."""
    fmt: dict[str, Counter[str]] = {}
    size: dict[str, Counter[str]] = {}
    for item, img in zip(items, images, strict=True):
        if item.source is None:
            continue
        ext = item.path.suffix.lower().lstrip(".").replace("jpeg", "jpg") or "(none)"
        fmt.setdefault(item.source, Counter())[ext] += 1
        size.setdefault(item.source, Counter())[f"{img.shape[1]}×{img.shape[0]}"] += 1
    out = []
    for what, table in (("file formats", fmt), ("image sizes", size)):
        if len(table) < 2:
            continue
        shared = set.intersection(*(set(c) for c in table.values()))
        if not shared:
            listed = "; ".join(f"{src}: {', '.join(k for k, _ in c.most_common(3))}"
                               for src, c in sorted(table.items()))
            out.append(f"the sources share no {what[:-1]} ({listed}): a model can learn the "
                       f"{what[:-1]} instead of the source; make {what} alike across sources")
            continue
        for src, counts in sorted(table.items()):  # a value only one source has, often
            own = [(k, n) for k, n in counts.items()
                   if n >= 0.2 * sum(counts.values())
                   and not any(k in other for o, other in table.items() if o != src)]
            if own:
                parts = ", ".join(f"{k} ({n} of {sum(counts.values())})" for k, n in own)
                out.append(f"only {src} has {what} {parts}: a model can learn that instead of "
                           f"the source; make {what} alike across sources")
    return out
