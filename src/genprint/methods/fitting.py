"""Fitting any attributor on labelled items (files), with bad files reported, not fatal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    extra = ({"train_origins": [train[k].origin for k in tr_idx],
              "val_origins": [val[k].origin for k in va_idx]}
             if attributor.uses_origins else {})
    attributor.fit(  # type: ignore[attr-defined]
        tr_imgs, [train[k].source for k in tr_idx], va_imgs, [val[k].source for k in va_idx],
        **extra)
    attributor.training_info_ = {
        **getattr(attributor, "training_info_", {}),
        "n_train": len(tr_imgs), "n_val": len(va_imgs), "n_skipped": len(tr_err) + len(va_err),
    }
    return tr_err + va_err
