"""Choosing the ``probe`` head's hyperparameter and the backbone layer on validation data.

Validation holds known sources only, so "validation AUROC" needs a definition:

* **hyperparameter** (C of ``logreg``, k of ``knn``), per layer: the macro one-vs-rest AUROC of
  the head's class probabilities on validation images (how well each source's probability ranks
  its own images above the others'); ties go to higher validation accuracy, then to the stronger
  regularisation (grids are ordered so);
* **open-set proxy** (``loso_auroc``), per layer: leave-one-source-out — for each known source,
  the probe (same head, hyperparameter and score) is refitted on the *other* sources' training
  images, and the AUROC of the open-set score separating the other sources' validation images
  (known) from the left-out source's (unknown) is computed; the mean over sources is reported.
  Needs at least three known sources;
* **layer** (``auto``), by ``layer_select``: ``balanced`` (default) maximises the mean of
  validation accuracy and ``loso_auroc`` (accuracy alone with fewer than three sources),
  ``accuracy`` maximises validation accuracy, ``loso`` the open-set proxy alone. Ties go to the
  earlier layer.

Test data is never used here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genprint.methods.probe_heads import C_GRID, K_GRID, LayerProbe

LAYER_SELECT = ("balanced", "accuracy", "loso")


def _auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` for ``positive`` (NaN when one side is empty)."""
    from sklearn.metrics import roc_auc_score

    if positive.all() or not positive.any():
        return float("nan")
    score = np.clip(np.nan_to_num(np.asarray(score, dtype=np.float64)), -1e300, 1e300)
    return float(roc_auc_score(positive.astype(int), score))


def macro_ovr_auroc(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean over sources of the AUROC of ``probs[:, c]`` for images of ``c`` vs the rest."""
    values = [_auroc(y == c, probs[:, c]) for c in range(probs.shape[1])]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over the sources present in ``y``."""
    from sklearn.metrics import f1_score

    labels = sorted(set(y.tolist()))
    return float(f1_score(y, pred, labels=labels, average="macro", zero_division=0))


def sweep(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
          n_classes: int, head: str, score: str, grid: Sequence[float] | None = None,
          score_k: int = 10, seed: int = 0) -> tuple[LayerProbe, dict[str, float]]:
    """Fit the head for every grid value; keep the best on validation (see module doc)."""
    if grid is None:
        grid = C_GRID if head == "logreg" else K_GRID
    if head == "knn":
        grid = sorted({min(int(k), len(x_tr)) for k in grid}, reverse=True)
    best: tuple[tuple[float, float], LayerProbe, dict[str, float]] | None = None
    for hp in grid:
        probe = LayerProbe.fit(x_tr, y_tr, n_classes, head, score, hp, score_k, seed)
        _, probs = probe.head_outputs(probe.standardise(x_va))
        pred = probs.argmax(axis=1)
        auc = macro_ovr_auroc(y_va, probs)
        acc = float(np.mean(pred == y_va))
        key = (auc if np.isfinite(auc) else -1.0, acc)
        if best is None or key > best[0]:
            best = (key, probe, {"hp": float(hp), "val_ovr_auroc": auc, "val_accuracy": acc,
                                 "val_macro_f1": macro_f1(y_va, pred, n_classes)})
    assert best is not None
    return best[1], best[2]


def loso_auroc(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
               n_classes: int, probe: LayerProbe, seed: int = 0) -> float:
    """Leave-one-source-out open-set AUROC (mean over sources; NaN under three sources)."""
    if len(np.unique(y_tr)) < 3:
        return float("nan")
    values = []
    for held in range(n_classes):
        keep = y_tr != held
        if keep.all():
            continue
        sub = LayerProbe.fit(x_tr[keep], y_tr[keep], n_classes, probe.head, probe.score,
                             probe.hp, probe.score_k, seed)
        cand, scores = sub.source_scores(x_va)
        value = _auroc(y_va != held, scores[np.arange(len(x_va)), cand])
        if np.isfinite(value):
            values.append(value)
    return float(np.mean(values)) if values else float("nan")


def criterion(row: dict[str, Any], rule: str) -> float:
    """The value a layer is chosen by under ``rule`` (higher is better)."""
    acc, loso = row["val_accuracy"], row["val_loso_auroc"]
    if rule == "accuracy" or not np.isfinite(loso):
        return float(acc)
    if rule == "loso":
        return float(loso)
    return float((acc + loso) / 2)


def choose_layer(rows: list[dict[str, Any]], rule: str) -> int:
    """Index (into ``rows``) of the layer to use; ties go to the earlier layer."""
    if rule not in LAYER_SELECT:
        raise ValueError(f"layer_select must be one of {LAYER_SELECT}, got {rule!r}")
    keys = [(criterion(r, rule), r["val_ovr_auroc"] if np.isfinite(r["val_ovr_auroc"]) else -1)
            for r in rows]
    return max(range(len(rows)), key=lambda k: (keys[k], -k))
