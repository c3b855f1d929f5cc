"""Evaluating an attributor on a benchmark protocol: one function, the same for every method.

The attributor answers for every **test** image of the protocol (known sources' test rows,
unknown sources' test rows, real images from held-out cameras); the answers are scored with
:mod:`genprint.evaluation.metrics`. Nothing here looks at a threshold: thresholds were fixed on
validation data when the attributor was trained, and evaluation only reads them.

Labelled data of one's own (a folder per source, or a manifest) is evaluated the same way:
:func:`load_eval_data` reads it and :func:`data_view` turns its images into a
:class:`~genprint.world.protocols.ProtocolView` whose known sources are the model's classes and
whose unknown sources are every other label (``unknown`` included).
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genprint import __version__
from genprint.evaluation.perturb import Perturbation
from genprint.io.batches import iter_images
from genprint.io.content import NO_CONTENT_REASON, is_uniform
from genprint.io.fingerprint import PictureSet
from genprint.io.images import ImageError
from genprint.io.sources import Item, ManifestError, load_dataset
from genprint.methods.base import BATCH_PIXELS, Attributor
from genprint.methods.recalibrate import recalibrations
from genprint.results import Attribution
from genprint.world.protocols import REAL, Protocol, ProtocolView, protocol_view

DATA_PROTOCOL = "data"
"""Protocol name of a :func:`data_view` (recorded as ``protocol`` in its metrics)."""


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
    if not ok:
        raise _nothing_to_evaluate([r.error for r in results])
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


def _nothing_to_evaluate(reasons: Sequence[str | None]) -> ValueError:
    """The error when no test image could be used, with the commonest reasons."""
    shown = "; ".join(f"{n} × {reason}" for reason, n in Counter(reasons).most_common(3))
    return ValueError(f"none of the {len(reasons)} test image(s) could be used ({shown}): "
                      "nothing to evaluate")


def seed_root(data: str | os.PathLike[str]) -> Path:
    """The folder perturbation seeds of data of one's own are relative to: ``data`` itself
    when it is a folder, else the folder of its manifest."""
    location = Path(data)
    return location if location.is_dir() else location.parent


def image_seed(item: Item, bench_dir: str | os.PathLike[str] | None) -> int:
    """Seed of an image's perturbation: crc32 of its path relative to the benchmark (or to the
    folder of one's own data; the path as given when there is none).

    The same image gets the same perturbation under every protocol and for every method.
    """
    name = item.path.as_posix()
    if bench_dir is not None:
        try:
            name = Path(os.path.realpath(item.path)).relative_to(
                os.path.realpath(bench_dir)).as_posix()
        except ValueError:  # outside the folder: the path as given
            pass
    return zlib.crc32(name.encode("utf-8", "surrogateescape"))


KEEP_PIXELS = 100_000_000
"""Decoded test pixels kept in memory between the clean run and the perturbed ones (~300 MB);
a larger test set is read again for each perturbation instead, so memory stays bounded."""


@dataclass
class _TestSet:
    view: ProtocolView
    items: list[Item]
    """The test items chosen (some may turn out unreadable)."""
    seeds: list[int]
    held_out_cameras: list[str]
    min_size: int
    keep: bool = False
    """Keep the decoded images for later passes (perturbations), if they fit."""
    kept: list[int] | None = None
    """Indices into ``items`` of the files that could be used; known after the first pass."""
    left_out: list[tuple[int, str, str]] = field(default_factory=list)
    """Test files that could not be used: (index into ``items``, error code, reason)."""
    cache: list[np.ndarray] | None = None
    """The kept images, when they fit in :data:`KEEP_PIXELS`."""
    sha256: dict[int, str | None] = field(default_factory=dict)
    """sha256 of each file's bytes as first read, by index into ``items``."""
    notes: dict[int, str] = field(default_factory=dict)
    """What decoding changed (:attr:`genprint.io.images.ImageInfo.notes`), by index into
    ``items``, for the files it changed."""
    fitted_on: PictureSet | None = None
    """Pixel fingerprints of the pictures the model was fitted on (None: it keeps none)."""
    seen: list[int] = field(default_factory=list)
    """Indices into ``items`` of usable test images that are among :attr:`fitted_on`."""
    copies: list[list[int]] = field(default_factory=list)
    """Groups of usable test files with the same bytes (set with :attr:`kept`)."""

    def chunks(self, size: int, on_skip: Callable[[int], None] | None = None
               ) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        """``(indices into items, pixels)`` of the usable test images, ``size`` at a time.

        The first pass reads every file, sets :attr:`kept` and :attr:`left_out` (with a
        warning), and keeps the pixels if they fit; later passes reuse them or read the kept
        files again. ``on_skip(n)`` is told of the ``n`` test files a pass leaves out (for a
        progress bar)."""
        if self.kept is None:
            yield from self._first_pass(size, on_skip)
            return
        if on_skip and len(self.items) > len(self.kept):
            on_skip(len(self.items) - len(self.kept))
        if self.cache is not None:
            for start in range(0, len(self.kept), size):  # fits in memory: any chunk size
                yield self.kept[start : start + size], self.cache[start : start + size]
        else:
            yield from _in_batches(self._read_again(), size)

    def _read_again(self) -> Iterator[tuple[int, np.ndarray]]:
        """The kept images read again, each checked to be the bytes first read."""
        assert self.kept is not None
        paths = [self.items[k].path for k in self.kept]
        for k, (path, loaded, digest, _) in zip(self.kept, iter_images(paths,
                                                                    min_size=self.min_size),
                                            strict=True):
            if isinstance(loaded, ImageError) or digest != self.sha256.get(k):
                why = loaded.reason if isinstance(loaded, ImageError) else "other bytes"
                raise RuntimeError(f"{path} changed during this evaluation ({why}); "
                                   "evaluate again once the files stay put")
            yield k, loaded

    def _first_pass(self, size: int, on_skip: Callable[[int], None] | None
                    ) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        kept: list[int] = []
        errors: list[tuple[int, str, str]] = []  # index, error code, reason
        cache: list[np.ndarray] | None = [] if self.keep else None
        pixels = 0

        def usable() -> Iterator[tuple[int, np.ndarray]]:
            nonlocal cache, pixels
            for k, (path, loaded, digest, notes) in enumerate(iter_images(
                    [i.path for i in self.items], min_size=self.min_size)):
                self.sha256[k] = digest
                if notes:
                    self.notes[k] = "; ".join(notes)
                if isinstance(loaded, ImageError) or is_uniform(loaded):
                    err = loaded if isinstance(loaded, ImageError) else ImageError(
                        "no_content", NO_CONTENT_REASON)
                    errors.append((k, err.code, err.reason))
                    if on_skip:
                        on_skip(1)
                    continue
                kept.append(k)
                if self.fitted_on is not None and loaded in self.fitted_on:
                    self.seen.append(k)
                if cache is not None:
                    pixels += loaded.shape[0] * loaded.shape[1]
                    if pixels <= KEEP_PIXELS:
                        cache.append(loaded)
                    else:  # too large to keep: later passes read the files again
                        cache = None
                yield k, loaded

        yield from _in_batches(usable(), size)
        self.settle(kept, errors)
        self.cache = cache

    def settle(self, kept: list[int], errors: Sequence[tuple[int, str, str]]) -> None:
        """Record the first pass's outcome: the usable files (``kept``, indices into
        :attr:`items`) and the left-out ones (index, error code, reason), with the warnings
        about them and about test images the model was fitted on (:attr:`seen`, filled by the
        pass). ValueError when no file is usable."""
        if self.items and not kept:
            raise _nothing_to_evaluate([reason for _, _, reason in errors])
        self.kept = kept
        self.left_out = list(errors)
        _warn_unusable([(self.items[k].path, code, reason) for k, code, reason in errors])
        if self.seen:
            shown = ", ".join(self.items[k].path.name for k in self.seen[:3])
            warnings.warn(
                f"{len(self.seen)} of the {len(kept)} test images are pictures the model was "
                f"fitted on (the same pixels as a training, validation or enrolled image: "
                f"{shown}{', ...' if len(self.seen) > 3 else ''}); their answers say nothing "
                "about new images and make the figures look better than they are. Keep test "
                "pictures out of training (the figures' test_seen_in_training lists them)",
                stacklevel=5)
        self.copies = self._copy_groups()
        self._warn_copies()

    @property
    def unreadable(self) -> list[dict[str, str | None]]:
        """The test files left out (:attr:`left_out`), in test order: path, source, error code,
        reason and sha256 each."""
        return [{"path": str(self.items[k].path), "source": self.items[k].source,
                 "error_code": code, "reason": reason, "sha256": self.sha256.get(k)}
                for k, code, reason in sorted(self.left_out)]

    def leave_out(self, rows: Sequence[Attribution]) -> list[int]:
        """After the clean run's answers (``rows``, in :attr:`kept` order): leave out, as the
        unreadable files are, the images the method itself could not analyse (error rows,
        e.g. ``invert`` when a generator's crop is of one colour), so that every later pass
        and the figures use the same images as a run that got the rows elsewhere (``--ray``).
        Returns the positions in ``rows`` that stay."""
        assert self.kept is not None
        stay = [j for j, r in enumerate(rows) if r.ok]
        if len(stay) == len(rows):
            return stay
        errors = [(self.kept[j], r.error_code or "unreadable", r.error or "could not be used")
                  for j, r in enumerate(rows) if not r.ok]
        if not stay:
            raise _nothing_to_evaluate([reason for _, _, reason in self.left_out + errors])
        gone = {k for k, _, _ in errors}
        if self.cache is not None:
            self.cache = [self.cache[j] for j in stay]
        self.kept = [self.kept[j] for j in stay]
        self.seen = [k for k in self.seen if k not in gone]
        self.left_out += errors
        _warn_unusable([(self.items[k].path, code, reason) for k, code, reason in errors])
        self.copies = self._copy_groups()
        return stay

    def _copy_groups(self) -> list[list[int]]:
        """Groups (indices into :attr:`items`, two or more each) of usable test files with the
        same bytes (sha256): copies of one file, which the figures count once per copy."""
        groups: dict[str, list[int]] = {}
        for k in self.kept or []:
            digest = self.sha256.get(k)
            if digest:
                groups.setdefault(digest, []).append(k)
        return [g for g in groups.values() if len(g) > 1]

    def _clashing_copies(self) -> list[list[int]]:
        """The groups of :attr:`copies` whose files carry more than one label."""
        return [g for g in self.copies if len({self.items[k].source for k in g}) > 1]

    def _warn_copies(self) -> None:
        if not self.copies:
            return
        extra = sum(len(g) - 1 for g in self.copies)
        clash = self._clashing_copies()
        message = (f"{extra} test file(s) are copies (same bytes) of another test file, and "
                   "each copy is counted in the figures")
        if clash:
            g = clash[0]
            message += (f"; {len(clash)} of these files carry two or more labels (first: "
                        + ", ".join(f"{self.items[k].path} as {self.items[k].source}"
                                    for k in g[:2])
                        + "): one picture cannot come from two sources, so some answers are "
                        "scored against a wrong label")
        warnings.warn(message + " (the figures' n_test_copies and "
                      "test_copies_with_other_labels count them)", stacklevel=6)

    def repeat_metrics(self) -> dict[str, Any]:
        """How many test files are extra copies of another, and the paths of the copies whose
        group carries more than one label."""
        return {"n_test_copies": sum(len(g) - 1 for g in self.copies),
                "test_copies_with_other_labels": [str(self.items[k].path)
                                                  for g in self._clashing_copies() for k in g]}

    def seen_metrics(self) -> dict[str, Any]:
        """How many (and which) test images the model was fitted on; None where it keeps no
        fingerprints (fitted by another way, or saved by an older genprint)."""
        if self.fitted_on is None:
            return {"n_test_seen_in_training": None, "test_seen_in_training": None}
        return {"n_test_seen_in_training": len(self.seen),
                "test_seen_in_training": [str(self.items[k].path) for k in self.seen]}


def _in_batches(pairs: Iterable[tuple[int, np.ndarray]], size: int
                ) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """``(indices, images)`` batches of ``pairs``, each ending at ``size`` images or once it
    holds :data:`BATCH_PIXELS` pixels."""
    idx: list[int] = []
    imgs: list[np.ndarray] = []
    pixels = 0
    for k, img in pairs:
        idx.append(k)
        imgs.append(img)
        pixels += img.shape[0] * img.shape[1]
        if len(imgs) == size or pixels >= BATCH_PIXELS:
            yield idx, imgs
            idx, imgs, pixels = [], [], 0
    if imgs:
        yield idx, imgs


def _warn_unusable(errors: Sequence[tuple[Path, str, str]]) -> None:
    """One warning for the test files left out: (path, error code, reason) each."""
    others = [(path, reason) for path, code, reason in errors if code != "not_found"]
    n_missing = len(errors) - len(others)
    if others:  # missing files counted apart: reading the data has already named them
        also = f", besides {n_missing} missing file(s)" if n_missing else ""
        warnings.warn(f"{len(others)} test file(s) could not be used (unreadable, too small "
                      f"for this model, or of one colour) and are left out{also}; first: "
                      f"{others[0][0]}: {others[0][1]}", stacklevel=3)
    elif n_missing:
        warnings.warn(f"{n_missing} test file(s) are missing and left out; first: "
                      f"{errors[0][0]}", stacklevel=3)


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


def _counts(sources: Sequence[str | None]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in sorted(Counter(map(str, sources)).items()))


def bench_view(bench_dir: str | os.PathLike[str], protocol: str) -> ProtocolView:
    """:func:`~genprint.world.protocols.protocol_view`, warning about dropped test rows.

    A test row whose source is neither known nor unknown in ``protocols.json`` (e.g. rows
    labelled ``unknown`` in a hand-made benchmark that does not list ``unknown``) is not part
    of the protocol; a warning gives how many were left out, per source.
    """
    view = protocol_view(bench_dir, protocol)
    dropped = [i.source for i in view.left_out_test]
    if dropped:
        warnings.warn(
            f"{len(dropped)} test image(s) left out: their source is neither known nor unknown "
            f"in protocol {protocol!r} of protocols.json ({_counts(dropped)}); list such "
            "sources under the protocol's \"unknown\" to evaluate them as unknown",
            stacklevel=2,
        )
    return view


def data_view(items: Sequence[Item], classes: Sequence[str],
              name: str = DATA_PROTOCOL) -> ProtocolView:
    """A view whose test split is ``items`` (all of them), for a model with ``classes``.

    Known sources are the model's classes that label some item; every other label (a source
    the model was not trained on, or the reserved ``unknown``) is an unknown source. Items
    without a label are refused (:class:`~genprint.io.sources.ManifestError`).
    """
    unlabelled = [i for i in items if not i.source]
    if unlabelled:
        raise ManifestError(
            f"{len(unlabelled)} image(s) to evaluate have no source label (first: "
            f"{unlabelled[0].path}); evaluation needs a label for every image: put them in a "
            "sub-folder per source, or give them a source in the manifest ('unknown' for "
            "sources the model was not trained on)"
        )
    present = {str(i.source) for i in items}
    known = tuple(c for c in classes if c in present)
    unknown = tuple(sorted(present - set(classes)))
    return ProtocolView(Protocol(name, known, unknown), test=list(items))


@dataclass
class EvalData:
    """Labelled images of one's own, ready to evaluate (see :func:`load_eval_data`)."""

    view: ProtocolView
    root: Path
    """Folder the images' paths are made relative to for perturbation seeds."""
    split: str | None
    """``"test"`` when the data has splits (only its test rows are used), else ``None``."""
    problems: list[str] = field(default_factory=list)
    """Problems found while reading (e.g. files listed but missing, rows left out)."""


def load_eval_data(data: str | os.PathLike[str], classes: Sequence[str]) -> EvalData:
    """Read ``data`` (anything :func:`~genprint.io.sources.load_dataset` reads) for evaluation.

    The evaluation set is the test split when the data has splits, otherwise every image;
    :func:`data_view` decides known and unknown sources from the model's ``classes``.
    """
    dataset = load_dataset(data)
    problems = [*dataset.notes, *dataset.problems]
    root = seed_root(dataset.location)
    split: str | None = None
    items = list(dataset.items)
    if any(i.split is not None for i in items):
        split = "test"
        unsplit = sum(i.split is None for i in items)
        items = [i for i in items if i.split == "test"]
        if not items:
            raise ManifestError(f"{dataset.location}: the data has splits but no test rows; "
                                "evaluation uses the test split")
        if unsplit:
            problems.append(f"{unsplit} row(s) without a split are left out (the data has "
                            "splits, and evaluation uses the test split)")
    return EvalData(data_view(items, classes), root, split, problems)


def check_model_sources(classes: Sequence[str], view: ProtocolView, *,
                        require_overlap: bool = False, where: str | None = None) -> None:
    """Check that a model with ``classes`` can be evaluated on ``view``.

    Errors (:class:`ValueError`): the model knows a source the protocol treats as unknown; and,
    with ``require_overlap``, none of the model's classes is a known source of the view (the
    model was trained for other sources: every metric would be undefined). Warnings: known
    sources of the view the model does not know (their images count as unknown), and the
    model's classes missing from the view's known sources.
    """
    protocol = view.protocol
    where = where or f"protocol {protocol.name!r}"
    leaked = sorted(set(classes) & set(protocol.unknown))
    if leaked:
        raise ValueError(
            f"the model knows {', '.join(leaked)}, which {where} treats as unknown: "
            "it was trained for another protocol"
        )
    known = set(protocol.known)
    absent = [c for c in classes if c not in known]
    if not protocol.known and protocol.unknown:
        warnings.warn(f"{where} holds only sources the model does not know "
                      f"({', '.join(sorted(protocol.unknown))}; the model knows "
                      f"{', '.join(classes)}): only the share of them called unknown "
                      "(unknown_rejected) is defined; check you gave the right model",
                      stacklevel=3)
    elif absent and len(absent) == len(classes):
        data_sources = sorted(set(protocol.known) | set(protocol.unknown))
        message = (f"none of the model's sources ({', '.join(classes)}) is a known source of "
                   f"{where}, whose sources are {', '.join(data_sources) or 'none'}: the "
                   "model was trained for other sources")
        if require_overlap:
            raise ValueError(message)
        warnings.warn(message + "; every metric is undefined", stacklevel=3)
    elif absent:
        warnings.warn(f"the model's source(s) {', '.join(absent)} are not among the known "
                      f"sources of {where}: no test image of them", stacklevel=3)
    missing = sorted(known - set(classes))
    if missing:
        warnings.warn(
            f"the model does not know {', '.join(missing)}; their test images count as unknown",
            stacklevel=3,
        )


def _load_test_set(attributor: Attributor, bench: str | os.PathLike[str] | ProtocolView,
                   protocol: str, max_per_source: int | None = None,
                   root: str | os.PathLike[str] | None = None,
                   require_overlap: bool = False) -> _TestSet:
    if isinstance(bench, ProtocolView):
        view, where = bench, ("the evaluation data" if bench.protocol.name == DATA_PROTOCOL
                              else None)
    else:
        view, where, root = bench_view(bench, protocol), None, root or bench
    check_model_sources(attributor.classes_, view, require_overlap=require_overlap,
                        where=where)
    chosen = cap_test_items(view.test, max_per_source)
    try:
        from genprint.world.cameras import camera_names

        held_out = camera_names(held_out=True)
    except ImportError:  # pragma: no cover - world extra not installed
        held_out = []
    fitted_on = attributor.training_fingerprints_
    return _TestSet(view, chosen, [image_seed(i, root) for i in chosen], held_out,
                    attributor.min_size,
                    fitted_on=None if fitted_on is None else PictureSet(fitted_on))


def _attribute(attributor: Attributor, test: _TestSet, perturb: Perturbation | None,
               batch_size: int, on_progress: Callable[[int], None] | None,
               embed: bool) -> tuple[list[Attribution], np.ndarray | None, int]:
    """Answers for the usable test images (in :attr:`_TestSet.kept` order), embeddings (if
    asked and available) and how many images ``perturb`` changed."""
    results: list[Attribution] = []
    embeddings: list[np.ndarray] = []
    changed = 0
    embed = embed and callable(getattr(attributor, "embed", None))
    for idx, chunk in test.chunks(batch_size, on_progress):
        if perturb is not None:
            seeds = [test.seeds[k] for k in idx]
            before = chunk
            chunk = [perturb(img, s) for img, s in zip(chunk, seeds, strict=True)]
            changed += sum(a.shape != b.shape or not np.array_equal(a, b)
                           for a, b in zip(before, chunk, strict=True))
        names = [str(test.items[k].path) for k in idx]
        answers = attributor.attribute_arrays(chunk, names)
        for k, answer in zip(idx, answers, strict=True):
            answer.sha256 = test.sha256.get(k)
            answer.notes = "; ".join(n for n in (test.notes.get(k), answer.notes) if n) or None
        results.extend(answers)
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
    if fn is None:  # images the method could not analyse are left out of every pass
        stay = test.leave_out(results)
        results = [results[j] for j in stay]
        embeddings = None if embeddings is None else embeddings[stay]
    return _scored_run(attributor, test, protocol, results, embeddings,
                       None if fn is None else changed)


def _scored_run(attributor: Attributor, test: _TestSet, protocol: str,
                results: list[Attribution], embeddings: np.ndarray | None,
                changed: int | None) -> EvaluationRun:
    """The run and its metrics from the answers for the usable test images (in
    :attr:`_TestSet.kept` order); ``changed``: how many images a perturbation changed (None
    for a clean run)."""
    items = [test.items[k] for k in test.kept or []]
    metrics = score_results(items, results, attributor.classes_, test.held_out_cameras)
    metrics = {"method": attributor.method, "protocol": protocol,
               "model_sha256": getattr(attributor, "model_sha256_", None),
               "thresholds_recalibrated_under": recalibrations(attributor),
               "genprint_version": __version__, **metrics,
               "n_unreadable_test": len(test.unreadable), "unreadable_test": test.unreadable,
               **test.seen_metrics(), **test.repeat_metrics()}
    if changed is not None:  # e.g. a crop leaves images no larger than the method's size whole
        metrics["perturbed_share"] = changed / max(len(items), 1)
        lost = sum(not r.ok for r in results)  # e.g. a crop that leaves one colour
        if lost:
            metrics["n_left_out_by_perturbation"] = lost
            warnings.warn(f"{lost} test image(s) could not be attributed once perturbed "
                          f"({results[[r.ok for r in results].index(False)].error}); the "
                          "figures of this condition leave them out", stacklevel=3)
    return EvaluationRun(items, results, _labels(items, attributor.classes_),
                         list(attributor.classes_), metrics, embeddings)


def evaluate(
    attributor: Attributor,
    bench_dir: str | os.PathLike[str] | ProtocolView,
    protocol: str,
    *,
    perturb: str | Perturbation | None = None,
    batch_size: int = 256,
    on_progress: Callable[[int], None] | None = None,
    max_per_source: int | None = None,
    root: str | os.PathLike[str] | None = None,
    require_overlap: bool = False,
    embed: bool = True,
) -> EvaluationRun:
    """Attribute every test image of ``protocol`` and compute the open-set metrics.

    ``perturb`` (optional) is a perturbation name from :mod:`genprint.evaluation.perturb` or a
    callable ``perturb(image, seed)``; it transforms each test image first, seeded per image by
    the crc32 of its path relative to the benchmark. Sources the attributor knows but the
    protocol calls unknown are an error: the model was trained for another protocol. When the
    attributor has a method ``embed(images) -> array``, the unperturbed run also keeps one
    embedding per image in :attr:`EvaluationRun.embeddings` (for the report's 2-D map;
    ``embed=False`` skips them).
    ``max_per_source`` evaluates only the first test images of each source in path order
    (:func:`cap_test_items`), for methods too slow for the whole split; the metrics' ``n_*``
    counts say how many were used.

    ``bench_dir`` may also be a :class:`~genprint.world.protocols.ProtocolView` (e.g. from
    :func:`data_view` or :func:`load_eval_data`): its test items are evaluated, ``protocol`` is
    only the name recorded in the metrics, and perturbation seeds use paths relative to
    ``root``. ``require_overlap`` makes a model none of whose classes is a known source an
    error instead of a warning (see :func:`check_model_sources`).
    """
    test = _load_test_set(attributor, bench_dir, protocol, max_per_source, root,
                          require_overlap)
    run = _run(attributor, test, protocol, perturb, batch_size, on_progress,
               embed=embed and perturb is None)
    if isinstance(perturb, str):
        run.metrics["perturbation"] = perturb
    return run


AnswerSource = Callable[[list[Path], Callable[[int], None] | None], Iterable[Attribution]]
"""``answers(paths, on_progress)``: one :class:`Attribution` per path, in the order given
(calling ``on_progress(n)`` as they come), e.g. rows computed on Ray."""


def evaluate_answers(
    attributor: Attributor,
    bench: str | os.PathLike[str] | ProtocolView,
    protocol: str,
    answers: AnswerSource,
    *,
    on_progress: Callable[[int], None] | None = None,
    root: str | os.PathLike[str] | None = None,
    require_overlap: bool = False,
) -> EvaluationRun:
    """The clean evaluation of :func:`evaluate` with the answers computed elsewhere.

    ``answers`` is given the test files' paths and must give the rows ``attributor`` gives for
    them (:meth:`~genprint.methods.base.Attributor.iter_attribute`'s: an error row for a file
    that cannot be used, ``seen_in_training``, ``sha256`` and ``notes`` filled in), e.g.
    :func:`genprint.scale.iter_attributions` with the same model, which reads and attributes
    the files in a pool of Ray actors. The test split, the checks of the model's sources, the
    files left out and the metrics are those of :func:`evaluate`; there are no embeddings (the
    report's 2-D map uses the per-source scores instead). RuntimeError if ``answers`` gives
    rows for other files or another number of them.
    """
    test = _load_test_set(attributor, bench, protocol, None, root, require_overlap)
    paths = [item.path for item in test.items]
    rows = list(answers(paths, on_progress))
    if len(rows) != len(paths) or any(r.path != str(p) for r, p in zip(rows, paths,
                                                                       strict=False)):
        raise RuntimeError(f"the answers are for other files than the {len(paths)} test "
                           f"file(s) asked ({len(rows)} row(s))")
    kept: list[int] = []
    errors: list[tuple[int, str, str]] = []
    for k, row in enumerate(rows):
        test.sha256[k] = row.sha256
        if row.notes:
            test.notes[k] = row.notes
        if not row.ok:
            errors.append((k, row.error_code or "unreadable", row.error or "could not be used"))
            continue
        kept.append(k)
        if row.seen_in_training:
            test.seen.append(k)
    test.settle(kept, errors)
    return _scored_run(attributor, test, protocol, [rows[k] for k in kept], None, None)


def evaluate_conditions(
    attributor: Attributor,
    bench: str | os.PathLike[str] | ProtocolView,
    protocol: str,
    perturbations: Sequence[str],
    *,
    batch_size: int = 256,
    on_progress: Callable[[int], None] | None = None,
    root: str | os.PathLike[str] | None = None,
    require_overlap: bool = False,
    embed: bool = True,
) -> tuple[EvaluationRun, dict[str, dict[str, Any]]]:
    """The clean evaluation plus the metrics under each named perturbation.

    Test images are read once; each condition perturbs every test image (real and generated
    alike, seeded per image) and re-attributes them with the thresholds fixed at training.
    ``perturbations`` may contain ``all``. Returns the clean :class:`EvaluationRun` and
    ``{name: metrics}`` in the order asked (each metrics dict has the clean run's keys, plus
    ``perturbed_share``: the share of test images the perturbation changed). ``bench``, ``root``
    and ``require_overlap`` are as in :func:`evaluate`; ``embed=False`` skips the embeddings
    of the clean run (only the report's 2-D map needs them, and they cost a second pass of the
    network for methods that do not keep them).
    """
    from genprint.evaluation.perturb import expand_perturbations

    names = expand_perturbations(perturbations)
    test = _load_test_set(attributor, bench, protocol, None, root, require_overlap)
    test.keep = bool(names)  # the clean run's pixels serve the perturbed runs
    run = _run(attributor, test, protocol, None, batch_size, on_progress, embed=embed)
    conditions: dict[str, dict[str, Any]] = {}
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined metrics were already warned about
            cond = _run(attributor, test, protocol, name, batch_size, on_progress, embed=False)
        lost = cond.metrics.get("n_left_out_by_perturbation")
        if lost:  # (its own warning was silenced with the others): this one is new
            first = next(r.error for r in cond.results if not r.ok)
            warnings.warn(f"{name}: {lost} test image(s) could not be attributed once perturbed "
                          f"({first}); the figures of this condition leave them out, so they "
                          "are not comparable with the clean run's", stacklevel=2)
        conditions[name] = cond.metrics
    return run, conditions
