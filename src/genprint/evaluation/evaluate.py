"""Evaluating an attributor on a benchmark protocol: one function, the same for every method.

The attributor answers for every **test** image of the protocol (known sources' test rows,
unknown sources' test rows, real images from held-out cameras); the answers are scored with
:mod:`genprint.evaluation.metrics`. Nothing here looks at a threshold: thresholds were fixed on
validation data when the attributor was trained, and evaluation only reads them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genprint.io.batches import load_items
from genprint.io.sources import Item
from genprint.methods.base import Attributor
from genprint.results import Attribution
from genprint.world.protocols import REAL, ProtocolView, protocol_view


@dataclass
class EvaluationRun:
    """Per-image answers of one evaluation, kept for reports (plots need more than metrics)."""

    items: list[Item]
    results: list[Attribution]
    y_true: np.ndarray
    classes: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)


def _labels(items: Sequence[Item], classes: list[str]) -> np.ndarray:
    index = {c: k for k, c in enumerate(classes)}
    return np.array([index.get(i.source or "", -1) for i in items], dtype=np.int64)


def score_results(
    items: Sequence[Item],
    results: Sequence[Attribution],
    classes: list[str],
    held_out_cameras: Sequence[str] = (),
) -> dict[str, Any]:
    """Open-set metrics from per-image answers (items whose file failed are left out)."""
    from genprint.evaluation.metrics import OpenSetMetrics, real_vs_generated_auroc

    ok = [k for k, r in enumerate(results) if r.ok]
    items = [items[k] for k in ok]
    results = [results[k] for k in ok]
    y_true = _labels(items, classes)
    cand = np.array([classes.index(r.candidate) for r in results], dtype=np.int64)  # type: ignore[arg-type]
    pred = np.where([bool(r.is_unknown) for r in results], -1, cand)
    score = np.array([r.score for r in results], dtype=np.float64)
    names = [i.source or "" for i in items]
    metrics = OpenSetMetrics()
    metrics.update(y_true, pred, cand, score, source_name=names)
    out = metrics.compute()
    is_real = np.array([i.source == REAL for i in items])
    if REAL in classes and is_real.any() and (~is_real).any():
        real_score = np.array([r.scores[REAL] for r in results])
        out["real_vs_generated_auroc"] = float(real_vs_generated_auroc(is_real, real_score))
    else:
        out["real_vs_generated_auroc"] = float("nan")
    held = [k for k, i in enumerate(items) if i.source == REAL and i.origin in set(held_out_cameras)]
    out["held_out_camera_real_accuracy"] = (
        float(np.mean([results[k].label == REAL for k in held])) if held else float("nan")
    )
    out["n_held_out_camera_test"] = len(held)
    return out


def evaluate(
    attributor: Attributor,
    bench_dir: str | os.PathLike[str],
    protocol: str,
    *,
    perturb: Callable[[np.ndarray, int], np.ndarray] | None = None,
    batch_size: int = 256,
    on_progress: Callable[[int], None] | None = None,
) -> EvaluationRun:
    """Attribute every test image of ``protocol`` and compute the open-set metrics.

    ``perturb(image, index)`` (optional) transforms each test image first, seeded by its index,
    for robustness conditions. Sources the attributor knows but the protocol calls unknown are an
    error: the model was trained for another protocol.
    """
    view: ProtocolView = protocol_view(bench_dir, protocol)
    leaked = sorted(set(attributor.classes_) & set(view.protocol.unknown))
    if leaked:
        raise ValueError(
            f"the model knows {', '.join(leaked)}, which protocol {protocol!r} treats as unknown: "
            "it was trained for another protocol"
        )
    missing = sorted(set(view.protocol.known) - set(attributor.classes_))
    if missing:
        warnings.warn(
            f"the model does not know {', '.join(missing)}; their test images count as unknown",
            stacklevel=2,
        )
    images, kept, errors = load_items([i.path for i in view.test], min_size=attributor.min_size)
    if errors:
        warnings.warn(f"{len(errors)} test file(s) could not be read and are left out; first: "
                      f"{errors[0][0]}: {errors[0][1].reason}", stacklevel=2)
    items = [view.test[k] for k in kept]
    if perturb is not None:
        images = [perturb(img, k) for img, k in zip(images, kept, strict=True)]
    results: list[Attribution] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        results.extend(attributor.attribute_arrays(chunk, [str(i.path) for i in
                                                           items[start : start + batch_size]]))
        if on_progress:
            on_progress(len(chunk))
    try:
        from genprint.world.cameras import camera_names

        held_out = camera_names(held_out=True)
    except ImportError:  # pragma: no cover - world extra not installed
        held_out = []
    metrics = score_results(items, results, attributor.classes_, held_out)
    metrics = {"method": attributor.method, "protocol": protocol, **metrics}
    return EvaluationRun(items, results, _labels(items, attributor.classes_),
                         list(attributor.classes_), metrics)
