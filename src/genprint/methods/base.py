"""The one interface every attribution method implements, and loading a saved attributor.

An :class:`Attributor` is fitted (or loaded), then answers for images. Subclasses implement
:meth:`Attributor.predict_arrays` on decoded pixels; the base class does everything around it that
must behave the same for every method: reading files with per-file errors, batching, turning
per-source scores into a label or ``unknown``, and saving / loading the model directory.

Conventions (scikit-learn style): ``__init__`` stores parameters only, learned state has a trailing
underscore (``classes_``, ``thresholds_``), ``fit`` returns ``self``; the open-set ``score`` is
higher for images more like a known source, and an image is ``unknown`` when its score is below
its candidate source's threshold.
"""

from __future__ import annotations

import os
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from genprint import UNKNOWN
from genprint.io.content import NO_CONTENT_REASON, is_uniform
from genprint.io.fingerprint import PictureSet, check_fingerprints
from genprint.io.images import AnimatedPolicy, is_rgb8
from genprint.registry import Registry
from genprint.results import Attribution
from genprint.storage.model_dir import ModelContents, ModelFormatError, read_model_dir

if TYPE_CHECKING:  # pragma: no cover
    from genprint.io.batches import LoadResult

METHODS: Registry[type[Attributor]] = Registry("method")
"""Every attribution method, by the name stored in its card (``baseline``, ``metric``, ...)."""

FINGERPRINTS_ARRAY = "training_fingerprints"
"""Name of the array of :attr:`Attributor.training_fingerprints_` in a model directory."""

BATCH_PIXELS = 32_000_000
"""Decoded pixels :meth:`Attributor.iter_attribute` holds before attributing them: a batch ends
at ``batch_size`` images or at this many pixels (a few large photographs, ~100 MB)."""

_BUILTIN_METHOD_MODULES = ("genprint.methods.baseline", "genprint.methods.metric",
                           "genprint.methods.invert", "genprint.methods.probe")


def check_training_labels(classes: list[str], val_labels: list[str]) -> None:
    """Refuse to fit on unusable source names (see
    :func:`genprint.io.sources.source_name_problem`; ``unknown`` cannot be trained on), or
    when a source has training images but no validation images: every method's thresholds are
    calibrated on validation data only."""
    from genprint.io.sources import check_source_names

    check_source_names(classes)
    decomposed = [c for c in classes if unicodedata.normalize("NFC", c) != c]
    if decomposed:  # data read by genprint is NFC already; this is for fit(...) in Python
        raise ValueError(
            f"source names must be in Unicode's composed form (NFC), so that 'ü' typed either "
            f"way is one source: {decomposed[0]!r} is not; pass "
            "unicodedata.normalize('NFC', name)")
    missing = sorted(set(classes) - set(val_labels))
    if missing:
        raise ValueError(
            "thresholds are calibrated on validation data only, and these sources have no "
            f"validation images: {', '.join(missing)} (give them more images or validation "
            "images: for data without a split, a larger --val-fraction; with a split, rows or "
            "a folder with split 'val')")


class NotFittedError(RuntimeError):
    """Raised when an attributor is used before ``fit`` (or ``load``)."""


@dataclass
class Prediction:
    """Per-image output of :meth:`Attributor.predict_arrays` (indices into ``classes_``)."""

    scores: np.ndarray
    """Score of the image for every known source (higher = closer), shape (n_classes,)."""
    n_tiles: int = 1
    tile_agreement: float = 1.0
    margins: np.ndarray | None = None
    """Per-source margin of a rule besides the score threshold (``metric``: the separators of
    enrolled sources, > 0 = claimed; −inf where a source has none), or ``None``."""
    error: str | None = None
    """Why the method could not analyse the image after all (``invert``: a generator's crop of
    it is uniform or too small), or ``None``. The image then gets an error row, not an answer."""
    error_code: str = "no_content"
    """The row's ``error_code`` when :attr:`error` is set."""
    notes: str | None = None
    """What the method did to the pixels that the row should say (``probe``: padding), added
    to the row's ``notes`` after the reading notes."""


class Attributor(ABC):
    """Base class of all attribution methods (see module doc for the conventions)."""

    method: ClassVar[str] = ""
    """Registry name of the method; stored in the card."""
    uses_origins: ClassVar[bool] = False
    """Whether ``fit`` takes ``train_origins`` and ``val_origins`` (each item's optional
    ``origin``, e.g. the camera model of a real image; see :class:`genprint.io.sources.Item`)."""
    thresholds_from_validation: ClassVar[bool] = True
    """Whether ``fit`` calibrates thresholds on the validation images (training then warns
    when a source has few of them)."""
    fits_on_features: ClassVar[bool] = False
    """Whether the method fits on per-image features of a frozen backbone, with ``plan_fit``
    and ``fit_features``: :func:`genprint.methods.fitting.fit_on_items` then reads the files
    in two passes and never holds all the decoded images (:mod:`genprint.methods.two_pass`)."""

    classes_: list[str]
    thresholds_: np.ndarray
    training_info_: dict[str, Any]
    """Provenance stored in the card under ``training`` (data, protocol, counts, ...)."""
    created_: dict[str, Any] | None = None
    """The card's ``created`` record of a loaded model, kept when it is saved again."""
    fit_used_: tuple[list[int], list[int]] | None = None
    """Positions, in the training and validation images given to ``fit``, of those it used,
    when it left some out (``probe``: a per-class cap, images too small); None: all of them."""
    training_fingerprints_: np.ndarray | None = None
    """Pixel fingerprints (N×24 uint8, :mod:`genprint.io.fingerprint`) of the pictures the
    model was fitted on (training and validation, and enrolled ones), saved with the model;
    ``genprint eval`` counts test images among them. Set by
    :func:`genprint.methods.fitting.fit_on_items`; None when the model was fitted another way
    or saved before fingerprints were kept."""

    # ----------------------------------------------------------------- to implement
    @property
    @abstractmethod
    def min_size(self) -> int:
        """Smallest image side the method accepts (its crop or tile size)."""

    @abstractmethod
    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Scores for decoded (H, W, 3) uint8 images, each at least ``min_size`` on a side."""

    @abstractmethod
    def _to_contents(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(card fields, tensors, arrays) describing the fitted state; see :meth:`save`."""

    @classmethod
    @abstractmethod
    def _from_contents(cls, contents: ModelContents) -> Attributor:
        """Rebuild a fitted attributor from a loaded model directory."""

    @classmethod
    def demo_params(cls, quick: bool) -> dict[str, Any]:
        """Constructor arguments for ``genprint demo`` (``quick``: the few-minute version)."""
        return {}

    def check_settings(self) -> None:
        """Raise ``ValueError`` for settings the method cannot fit with, before any image is
        read (:func:`genprint.methods.fitting.fit_on_items` calls it first; ``fit`` checks
        again). By default there is nothing to check."""

    @classmethod
    def demo_test_cap(cls, quick: bool) -> int | None:
        """At most this many test images per source in ``genprint demo`` (None: all of them).
        Only for methods whose per-image cost does not fit the demo's time budget; the demo
        prints the cap and the metrics' ``n_*`` counts show it."""
        return None

    # ----------------------------------------------------------------- shared behaviour
    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_") or not hasattr(self, "thresholds_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(...) or genprint.load(...)"
            )

    def decide(self, prediction: Prediction) -> tuple[int, float, float, bool]:
        """(candidate index, score, threshold, is_unknown) from per-source scores."""
        candidate = int(np.argmax(prediction.scores))
        score = float(prediction.scores[candidate])
        threshold = float(self.thresholds_[candidate])
        return candidate, score, threshold, bool(score < threshold)

    def attribute_arrays(self, images: Sequence[np.ndarray],
                         names: Sequence[str] | None = None) -> list[Attribution]:
        """Attribute decoded images (no file I/O). ``names`` fill the ``path`` field."""
        self._check_fitted()
        names = list(names) if names is not None else [f"<array {i}>" for i in range(len(images))]
        results: list[Attribution] = []
        good: list[int] = []
        for i, img in enumerate(images):
            if not is_rgb8(img):
                results.append(Attribution(names[i], error=f"expected (H, W, 3) uint8, got "
                                           f"{img.dtype} {img.shape}", error_code="corrupt"))
            elif min(img.shape[:2]) < self.min_size:
                h, w = img.shape[:2]
                results.append(Attribution(
                    names[i], error=f"image is {w}×{h}, smaller than the required "
                    f"{self.min_size}×{self.min_size} crop (images are never upsampled)",
                    error_code="too_small"))
            elif is_uniform(img):
                results.append(Attribution(
                    names[i], error=NO_CONTENT_REASON, error_code="no_content"))
            else:
                results.append(Attribution(names[i]))
                good.append(i)
        if good:
            predictions = self.predict_arrays([images[i] for i in good])
            for i, pred in zip(good, predictions, strict=True):
                if pred.error is not None:
                    results[i] = Attribution(names[i], error=pred.error,
                                             error_code=pred.error_code)
                    continue
                bad = [c for c, s in zip(self.classes_, pred.scores, strict=True)
                       if np.isnan(s)]
                if bad:  # a numerical failure: no answer rather than one decided by NaN
                    results[i] = Attribution(
                        names[i], error=f"the method gave no valid score (NaN) for "
                        f"{', '.join(bad)}: a numerical failure, so no answer is given",
                        error_code="no_score")
                    continue
                cand, score, thr, unknown = self.decide(pred)
                results[i] = Attribution(
                    path=names[i],
                    label=UNKNOWN if unknown else self.classes_[cand],
                    candidate=self.classes_[cand],
                    score=score,
                    threshold=thr,
                    is_unknown=unknown,
                    scores={c: float(s) for c, s in zip(self.classes_, pred.scores, strict=True)},
                    n_tiles=pred.n_tiles,
                    tile_agreement=pred.tile_agreement,
                    notes=pred.notes,
                    accepted_by=None if unknown else (
                        "threshold" if score >= thr else "separator"),
                )
            seen = self._fitted_on()
            if seen is not None:
                for i in (i for i in good if results[i].error is None):
                    results[i].seen_in_training = images[i] in seen
        model_id = getattr(self, "model_sha256_", None)
        for r in results:
            r.model_sha256 = model_id
        return results

    def _fitted_on(self) -> PictureSet | None:
        """:attr:`training_fingerprints_` as a :class:`~genprint.io.fingerprint.PictureSet`
        (cached while the array stays the same)."""
        rows = self.training_fingerprints_
        if rows is None:
            return None
        cached = getattr(self, "_fitted_on_cache", None)
        if cached is None or cached[0] is not rows:
            cached = (rows, PictureSet(rows))
            self._fitted_on_cache = cached
        return cached[1]

    def attribute(
        self,
        inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        batch_size: int = 64,
        workers: int | None = None,
        animated: AnimatedPolicy = "refuse",
        on_progress: Callable[[int], None] | None = None,
    ) -> list[Attribution]:
        """Attribute image files: one :class:`Attribution` per image, in input order.

        ``inputs`` is one path or a list of paths, as on the command line: a folder stands for
        every image file below it (sorted, hidden files skipped), any other path is read as an
        image. A file that cannot be used gets a row with its ``error`` and ``error_code``; the
        rest of the batch goes on. ``on_progress(n)`` is called after each processed chunk of
        ``n`` files. :meth:`iter_attribute` gives the same rows as they are ready.
        """
        return list(self.iter_attribute(inputs, batch_size=batch_size, workers=workers,
                                        animated=animated, on_progress=on_progress))

    def iter_attribute(
        self,
        inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        batch_size: int = 64,
        workers: int | None = None,
        animated: AnimatedPolicy = "refuse",
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[Attribution]:
        """:meth:`attribute`, one row at a time in input order, each as soon as it is ready.

        Rows already yielded are final, so a caller that stops early (an interrupt) keeps
        them. Decoded images wait for a batch of ``batch_size`` or of :data:`BATCH_PIXELS`
        pixels, whichever comes first, so a folder of large photographs holds a few of them
        in memory, not ``batch_size``.
        """
        from genprint.io.batches import iter_images
        from genprint.io.sources import scan_inputs

        self._check_fitted()
        if isinstance(inputs, str | bytes | os.PathLike):  # one path, not a sequence
            inputs = [inputs]
        inputs = scan_inputs([os.fsdecode(p) if isinstance(p, bytes) else p for p in inputs])
        yield from self.attribute_loaded(
            iter_images(inputs, workers=workers, min_size=self.min_size, animated=animated),
            batch_size=batch_size, on_progress=on_progress)

    def attribute_loaded(
        self,
        loaded: Iterable[LoadResult],
        *,
        batch_size: int = 64,
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[Attribution]:
        """Attribute images already read (:class:`~genprint.io.batches.LoadResult`, e.g. from
        :func:`~genprint.io.batches.iter_images` or from uploaded bytes), one row per input in
        order: what :meth:`iter_attribute` does after reading the files. A result that holds an
        error becomes an error row; the others are batched as :meth:`iter_attribute` says."""
        from genprint.io.batches import ordered_batches

        self._check_fitted()
        model_id = getattr(self, "model_sha256_", None)

        def error_row(result: Any) -> Attribution:
            if on_progress:
                on_progress(1)
            return Attribution(str(result.path), sha256=result.sha256, model_sha256=model_id,
                               error=result.pixels.reason, error_code=result.pixels.code)

        def run(images: list[np.ndarray], waiting: list[Attribution]) -> list[Attribution]:
            out = self.attribute_arrays(images, [w.path for w in waiting])
            for row, w in zip(out, waiting, strict=True):
                row.sha256 = w.sha256
                row.notes = "; ".join(n for n in (w.notes, row.notes) if n) or None
            if on_progress:
                on_progress(len(images))
            return out

        yield from ordered_batches(
            loaded, batch_size=batch_size, batch_pixels=BATCH_PIXELS, error_row=error_row,
            placeholder=lambda r: Attribution(str(r.path), sha256=r.sha256,
                                              notes="; ".join(r.notes) or None), run=run)

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Save the fitted attributor as a model directory (atomic; see genprint.storage)."""
        from genprint.storage.model_dir import write_model_dir

        self._check_fitted()
        fields, tensors, arrays = self._to_contents()
        if self.training_fingerprints_ is not None:
            arrays = {**arrays, FINGERPRINTS_ARRAY: check_fingerprints(self.training_fingerprints_)}
        card = {
            "method": self.method,
            "classes": list(self.classes_),
            "thresholds": [float(t) for t in self.thresholds_],
            "training": dict(getattr(self, "training_info_", {})),
            **fields,
        }
        if self.created_:  # saved again (enrolled): keep when it was made
            card["created"] = self.created_
        from genprint.storage.model_dir import CARD_NAME, sha256_file

        out = write_model_dir(path, card, tensors=tensors, arrays=arrays, overwrite=overwrite,
                              extra_files=self._extra_files())
        self.model_sha256_ = sha256_file(out / CARD_NAME)
        return out

    def _extra_files(self) -> dict[str, bytes]:
        """Files saved next to the card for people to read (e.g. a table); none by default."""
        return {}


def _ensure_builtin_methods() -> None:
    import importlib

    for module in _BUILTIN_METHOD_MODULES:
        importlib.import_module(module)


def method_names() -> list[str]:
    """Names of the available attribution methods."""
    _ensure_builtin_methods()
    return METHODS.names()


def load_attributor(path: str | os.PathLike[str]) -> Attributor:
    """Load any saved attributor: checks format version and checksums, then picks the method."""
    contents = read_model_dir(path)
    name = contents.card.get("method")
    _ensure_builtin_methods()
    if not isinstance(name, str) or name not in METHODS:
        raise ModelFormatError(
            f"{path}: card names method {name!r}, which this genprint does not provide "
            f"(available: {', '.join(METHODS.names())})"
        )
    try:
        attributor = METHODS.get(name)._from_contents(contents)
        _check_card_consistency(attributor)
        # names as genprint reads data now (a model trained before on macOS folder names
        # keeps them decomposed in its card)
        attributor.classes_ = [unicodedata.normalize("NFC", c) for c in attributor.classes_]
        if len(set(attributor.classes_)) != len(attributor.classes_):
            raise ModelFormatError("two of the card's source names are one name in Unicode's "
                                   "composed form (NFC)")
        if FINGERPRINTS_ARRAY in contents.arrays:
            attributor.training_fingerprints_ = check_fingerprints(
                contents.arrays[FINGERPRINTS_ARRAY])
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:  # a card edited by hand, ...
        raise ModelFormatError(f"{path}: the card does not describe a usable {name} model "
                               f"({type(exc).__name__}: {exc})") from None
    attributor.model_sha256_ = contents.card_sha256
    attributor.created_ = contents.card.get("created")
    return attributor


def _check_card_consistency(attributor: Attributor) -> None:
    """What every method's card must satisfy: distinct source names, and one finite threshold
    per source (a NaN threshold would silently never accept its source). The rules for new
    source names are checked at fit and enrol time, not here, so that models saved before them
    still load."""
    classes = list(attributor.classes_)
    if len(set(classes)) != len(classes) or not all(isinstance(c, str) for c in classes):
        raise ModelFormatError(f"the card's classes must be distinct names: {classes}")
    for name in ("patch_size", "max_tiles", "batch_size"):  # sizes every method reads
        value = getattr(attributor, name, None)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ModelFormatError(f"the card's {name} must be a positive whole number, got "
                                   f"{value!r}")
    thresholds = np.asarray(attributor.thresholds_, dtype=np.float64)
    if thresholds.shape != (len(classes),):
        raise ModelFormatError(f"the card has {thresholds.size} threshold(s) for "
                               f"{len(classes)} source(s)")
    if not np.isfinite(thresholds).all():
        raise ModelFormatError("the card has a threshold that is not a finite number")
