"""Evaluating an attributor on a benchmark protocol: one function, the same for every method.

The attributor answers for every **test** image of the protocol (known sources' test rows,
unknown sources' test rows, real images from held-out cameras); the answers are scored with
:mod:`genprint.evaluation.metrics`. Nothing here looks at a threshold: thresholds were fixed on
validation data when the attributor was trained, and evaluation only reads them.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genprint.evaluation.perturb import Perturbation
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
    embeddings: np.ndarray | None = None
    """Per-image embeddings (row ``k`` for ``items[k]``) when the attributor has ``embed``."""


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
    # undefined (NaN) when there are no such images, or when the model has no `real` class
    # (e.g. `invert`, a verifier of generators): it could never answer `real`
    out["held_out_camera_real_accuracy"] = (
        float(np.mean([results[k].label == REAL for k in held]))
        if held and REAL in classes else float("nan")
    )
    out["n_held_out_camera_test"] = len(held)
    return out


def _image_seed(item: Item, bench_dir: Path) -> int:
    """Seed of an image's perturbation: crc32 of its path relative to the benchmark.

    The same image gets the same perturbation under every protocol and for every method.
    """
    try:
        name = item.path.resolve().relative_to(bench_dir.resolve()).as_posix()
    except ValueError:
        name = item.path.as_posix()
    return zlib.crc32(name.encode("utf-8"))


@dataclass
class _TestSet:
    view: ProtocolView
    items: list[Item]
    images: list[np.ndarray]
    seeds: list[int]
    held_out_cameras: list[str]
    unreadable: list[dict[str, str]]
    """Test files that could not be read (left out): path, error code and reason."""


def cap_test_items(items: Sequence[Item], per_source: int | None) -> list[Item]:
    """At most ``per_source`` test items of each source: the first ones in path order (a fixed,
    seed-free subset, so every run and every method capped alike sees the same images)."""
    if per_source is None:
        return list(items)
    if per_source < 1:
        raise ValueError(f"per_source must be ≥ 1, got {per_source}")
    first = sorted(range(len(items)), key=lambda k: str(items[k].path))
    seen: dict[str | None, int] = {}
    kept = set()
    for k in first:
        source = items[k].source
        if seen.get(source, 0) < per_source:
            seen[source] = seen.get(source, 0) + 1
            kept.add(k)
    return [item for k, item in enumerate(items) if k in kept]


def _load_test_set(attributor: Attributor, bench_dir: str | os.PathLike[str],
                   protocol: str, max_per_source: int | None = None) -> _TestSet:
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
            stacklevel=3,
        )
    chosen = cap_test_items(view.test, max_per_source)
    images, kept, errors = load_items([i.path for i in chosen], min_size=attributor.min_size)
    if errors:
        warnings.warn(f"{len(errors)} test file(s) could not be read and are left out; first: "
                      f"{errors[0][0]}: {errors[0][1].reason}", stacklevel=3)
    items = [chosen[k] for k in kept]
    try:
        from genprint.world.cameras import camera_names

        held_out = camera_names(held_out=True)
    except ImportError:  # pragma: no cover - world extra not installed
        held_out = []
    unreadable = [{"path": str(path), "error_code": err.code, "reason": err.reason}
                  for path, err in errors]
    return _TestSet(view, items, images, [_image_seed(i, Path(bench_dir)) for i in items],
                    held_out, unreadable)


def _attribute(attributor: Attributor, test: _TestSet, perturb: Perturbation | None,
               batch_size: int, on_progress: Callable[[int], None] | None,
               embed: bool) -> tuple[list[Attribution], np.ndarray | None, int]:
    """Answers, embeddings (if asked and available) and how many images ``perturb`` changed."""
    results: list[Attribution] = []
    embeddings: list[np.ndarray] = []
    changed = 0
    embed = embed and callable(getattr(attributor, "embed", None))
    for start in range(0, len(test.images), batch_size):
        chunk = test.images[start : start + batch_size]
        if perturb is not None:
            seeds = test.seeds[start : start + batch_size]
            before = chunk
            chunk = [perturb(img, s) for img, s in zip(chunk, seeds, strict=True)]
            changed += sum(a.shape != b.shape or not np.array_equal(a, b)
                           for a, b in zip(before, chunk, strict=True))
        names = [str(i.path) for i in test.items[start : start + batch_size]]
        results.extend(attributor.attribute_arrays(chunk, names))
        if embed:
            embeddings.append(np.asarray(attributor.embed(chunk)))  # type: ignore[attr-defined]
        if on_progress:
            on_progress(len(chunk))
    return results, (np.concatenate(embeddings) if embeddings else None), changed


def _resolve(perturb: str | Perturbation | None, min_size: int) -> Perturbation | None:
    if isinstance(perturb, str):
        from genprint.evaluation.perturb import perturbation

        return perturbation(perturb, min_size=min_size)
    return perturb


def _run(attributor: Attributor, test: _TestSet, protocol: str,
         perturb: str | Perturbation | None, batch_size: int,
         on_progress: Callable[[int], None] | None, embed: bool) -> EvaluationRun:
    fn = _resolve(perturb, attributor.min_size)
    results, embeddings, changed = _attribute(attributor, test, fn, batch_size, on_progress,
                                              embed)
    metrics = score_results(test.items, results, attributor.classes_, test.held_out_cameras)
    metrics = {"method": attributor.method, "protocol": protocol, **metrics,
               "n_unreadable_test": len(test.unreadable), "unreadable_test": test.unreadable}
    if fn is not None:  # e.g. a crop leaves images no larger than the method's size whole
        metrics["perturbed_share"] = changed / max(len(test.images), 1)
    return EvaluationRun(list(test.items), results, _labels(test.items, attributor.classes_),
                         list(attributor.classes_), metrics, embeddings)


def evaluate(
    attributor: Attributor,
    bench_dir: str | os.PathLike[str],
    protocol: str,
    *,
    perturb: str | Perturbation | None = None,
    batch_size: int = 256,
    on_progress: Callable[[int], None] | None = None,
    max_per_source: int | None = None,
) -> EvaluationRun:
    """Attribute every test image of ``protocol`` and compute the open-set metrics.

    ``perturb`` (optional) is a perturbation name from :mod:`genprint.evaluation.perturb` or a
    callable ``perturb(image, seed)``; it transforms each test image first, seeded per image by
    the crc32 of its path relative to the benchmark. Sources the attributor knows but the
    protocol calls unknown are an error: the model was trained for another protocol. When the
    attributor has a method ``embed(images) -> array``, the unperturbed run also keeps one
    embedding per image in :attr:`EvaluationRun.embeddings` (for the report's 2-D map).
    ``max_per_source`` evaluates only the first test images of each source in path order
    (:func:`cap_test_items`), for methods too slow for the whole split; the metrics' ``n_*``
    counts say how many were used.
    """
    test = _load_test_set(attributor, bench_dir, protocol, max_per_source)
    run = _run(attributor, test, protocol, perturb, batch_size, on_progress,
               embed=perturb is None)
    if isinstance(perturb, str):
        run.metrics["perturbation"] = perturb
    return run


def evaluate_conditions(
    attributor: Attributor,
    bench: str | os.PathLike[str],
    protocol: str,
    perturbations: Sequence[str],
    *,
    batch_size: int = 256,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[EvaluationRun, dict[str, dict[str, Any]]]:
    """The clean evaluation plus the metrics under each named perturbation.

    Test images are read once; each condition perturbs every test image (real and generated
    alike, seeded per image) and re-attributes them with the thresholds fixed at training.
    ``perturbations`` may contain ``all``. Returns the clean :class:`EvaluationRun` and
    ``{name: metrics}`` in the order asked (each metrics dict has the clean run's keys, plus
    ``perturbed_share``: the share of test images the perturbation changed).
    """
    from genprint.evaluation.perturb import expand_perturbations

    names = expand_perturbations(perturbations)
    test = _load_test_set(attributor, bench, protocol)
    run = _run(attributor, test, protocol, None, batch_size, on_progress, embed=True)
    conditions: dict[str, dict[str, Any]] = {}
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined metrics were already warned about
            cond = _run(attributor, test, protocol, name, batch_size, on_progress, embed=False)
        conditions[name] = cond.metrics
    return run, conditions
