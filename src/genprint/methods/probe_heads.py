"""Heads and open-set scores of the ``probe`` method, on the features of one backbone layer.

Features are first standardised with the training mean and standard deviation (so that a few
very large channels of a transformer's residual stream do not dominate).

Heads (the closed-set classifier, which names the candidate source):

* ``logreg`` — multinomial logistic regression, L2 penalty of strength ``1/C``;
* ``knn`` — k nearest training images by cosine similarity (faiss ``IndexFlatIP`` on the
  L2-normalised standardised features), each neighbour voting with its similarity (negative
  similarities count 0). Class probabilities are the vote shares; logits the votes divided by k.

Open-set scores (per source, higher = more like that source; the image's score is the one of its
candidate):

* ``msp`` — the head's class probability (maximum softmax probability);
* ``maxlogit`` — the head's logit;
* ``energy`` — the negative free energy ``logsumexp(logits)`` at the candidate; every other source
  gets it minus its logit gap to the candidate, so the per-source ranking stays the head's;
* ``knn`` — mean cosine similarity to the k nearest training images *of that source*
  (k = the head's k, or ``score_k`` with the logistic head);
* ``mahalanobis`` — minus the squared Mahalanobis distance to the source's mean, with one shared
  covariance (Ledoit-Wolf shrinkage) of the standardised training features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADS = ("logreg", "knn")
SCORES = ("msp", "maxlogit", "energy", "knn", "mahalanobis")
DEFAULT_SCORE = {"logreg": "msp", "knn": "knn"}
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
"""Inverse L2 strengths swept for ``logreg`` (ties go to the smallest C: strongest penalty)."""
K_GRID = (50, 20, 10, 5, 3, 1)
"""Neighbour counts swept for ``knn`` (ties go to the largest k: smoothest vote)."""


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _ip_search(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of ``queries`` against ``bank`` with a faiss flat index."""
    import faiss

    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(np.ascontiguousarray(bank, dtype=np.float32))
    sims, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return sims, idx


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]


@dataclass
class LayerProbe:
    """A head and an open-set score fitted on one layer's features (see module doc)."""

    head: str
    score: str
    hp: float
    """The head's hyperparameter: C for ``logreg``, k for ``knn``."""
    n_classes: int
    score_k: int = 10
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """``mean``, ``std`` and what the head and score need (``coef``, ``intercept``, ``bank``,
    ``bank_labels``, ``class_means``, ``precision``)."""

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_classes: int, head: str, score: str,
            hp: float, score_k: int = 10, seed: int = 0) -> LayerProbe:
        """Fit on training features ``x`` (N×D) with labels ``y`` in ``0..n_classes-1``."""
        if head not in HEADS or score not in SCORES:
            raise ValueError(f"head must be one of {HEADS} and score one of {SCORES}")
        present = np.unique(y)
        if head == "logreg" and len(present) < 2:
            raise ValueError("logistic regression needs at least two known sources")
        mean = x.mean(axis=0)
        std = x.std(axis=0) + 1e-6
        probe = cls(head, score, float(hp), n_classes, int(score_k),
                    {"mean": mean.astype(np.float32), "std": std.astype(np.float32)})
        z = probe.standardise(x)
        if head == "logreg":
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression(C=float(hp), l1_ratio=0.0, max_iter=2000,
                                     random_state=seed)
            clf.fit(z, y)
            coef = np.zeros((n_classes, z.shape[1]), dtype=np.float64)
            intercept = np.full(n_classes, -1e4, dtype=np.float64)  # absent classes never win
            if len(clf.classes_) == 2:
                coef[clf.classes_[1]], intercept[clf.classes_[1]] = clf.coef_[0] / 2, \
                    clf.intercept_[0] / 2
                coef[clf.classes_[0]], intercept[clf.classes_[0]] = -clf.coef_[0] / 2, \
                    -clf.intercept_[0] / 2
            else:
                coef[clf.classes_], intercept[clf.classes_] = clf.coef_, clf.intercept_
            probe.arrays.update(coef=coef.astype(np.float32),
                                intercept=intercept.astype(np.float32))
        if head == "knn" or score == "knn":
            probe.arrays.update(bank=l2_normalise(z), bank_labels=y.astype(np.int64))
        if score == "mahalanobis":
            from sklearn.covariance import LedoitWolf

            means = np.zeros((n_classes, z.shape[1]), dtype=np.float64)
            for c in present:
                means[c] = z[y == c].mean(axis=0)
            precision = LedoitWolf().fit(z - means[y]).precision_
            mask = np.zeros(n_classes, dtype=bool)
            mask[present] = True
            probe.arrays.update(class_means=means.astype(np.float32),
                                precision=precision.astype(np.float32), present=mask)
        return probe

    # ------------------------------------------------------------------ inference
    def standardise(self, x: np.ndarray) -> np.ndarray:
        """Features standardised with the training statistics."""
        return ((x - self.arrays["mean"]) / self.arrays["std"]).astype(np.float32)

    @property
    def k(self) -> int:
        """Neighbours used by the k-NN head."""
        return int(self.hp)

    def head_outputs(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, probabilities) of the head for standardised features, each N×C."""
        if self.head == "logreg":
            logits = z @ self.arrays["coef"].T + self.arrays["intercept"]
            probs = np.exp(logits - _logsumexp(logits)[:, None])
            return logits, probs
        bank, labels = self.arrays["bank"], self.arrays["bank_labels"]
        k = min(self.k, len(bank))
        sims, idx = _ip_search(bank, l2_normalise(z), k)
        votes = np.zeros((len(z), self.n_classes), dtype=np.float64)
        np.add.at(votes, (np.repeat(np.arange(len(z)), k), labels[idx].ravel()),
                  np.maximum(sims, 0.0).ravel())
        total = votes.sum(axis=1, keepdims=True)
        probs = np.where(total > 0, votes / np.maximum(total, 1e-12), 1.0 / self.n_classes)
        return votes / k, probs

    def _knn_scores(self, z: np.ndarray) -> np.ndarray:
        bank, labels = self.arrays["bank"], self.arrays["bank_labels"]
        k_score = self.k if self.head == "knn" else self.score_k
        q = l2_normalise(z)
        out = np.full((len(z), self.n_classes), -2.0, dtype=np.float64)  # below any cosine
        for c in range(self.n_classes):
            members = bank[labels == c]
            if len(members):
                sims, _ = _ip_search(members, q, min(k_score, len(members)))
                out[:, c] = sims.mean(axis=1)
        return out

    def _mahalanobis_scores(self, z: np.ndarray) -> np.ndarray:
        means, precision = self.arrays["class_means"], self.arrays["precision"]
        present = self.arrays.get("present")
        out = np.full((len(z), self.n_classes), -1e12, dtype=np.float64)
        for c in range(self.n_classes):
            if present is None or present[c]:
                d = z - means[c]
                out[:, c] = -np.einsum("nd,de,ne->n", d, precision, d)
        return out

    def source_scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidate index per image, per-source open-set scores N×C) for raw features."""
        z = self.standardise(x)
        logits, probs = self.head_outputs(z)
        candidate = probs.argmax(axis=1)
        if self.score == "msp":
            scores = probs
        elif self.score == "maxlogit":
            scores = logits
        elif self.score == "energy":
            scores = logits + (_logsumexp(logits) - logits.max(axis=1))[:, None]
        elif self.score == "knn":
            scores = self._knn_scores(z)
        else:
            scores = self._mahalanobis_scores(z)
        return candidate, np.asarray(scores, dtype=np.float64)

    # ------------------------------------------------------------------ persistence
    def card(self) -> dict[str, Any]:
        """JSON fields that, with :attr:`arrays`, rebuild this probe."""
        return {"head": self.head, "score": self.score, "hp": self.hp,
                "n_classes": self.n_classes, "score_k": self.score_k}

    @classmethod
    def from_card(cls, card: dict[str, Any], arrays: dict[str, np.ndarray]) -> LayerProbe:
        """Inverse of :meth:`card` (``arrays`` as saved)."""
        return cls(str(card["head"]), str(card["score"]), float(card["hp"]),
                   int(card["n_classes"]), int(card.get("score_k", 10)), dict(arrays))
