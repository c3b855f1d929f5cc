"""Fitting any attributor on labelled items (files), with bad files reported, not fatal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genprint.io.batches import load_items
from genprint.io.fingerprint import as_keys, data_digest, fingerprints
from genprint.io.images import ImageError
from genprint.io.sources import Item
from genprint.methods.base import Attributor


def fit_on_items(
    attributor: Attributor, train: Sequence[Item], val: Sequence[Item], *,
    on_read: Callable[[int], None] | None = None, keep_decoded_bytes: int | None = None,
) -> list[tuple[Path, ImageError]]:
    """Read the images of ``train`` and ``val`` and fit ``attributor`` on them.

    Thresholds are calibrated on ``val`` only. Methods with ``uses_origins`` also get each
    item's ``origin`` (``train_origins``, ``val_origins``). Returns the files that could not be
    used (each with its reason); they are left out and the fit goes on with the rest.

    A method that ``fits_on_features`` (``probe``) is fitted in two passes over the files,
    holding at most ``keep_decoded_bytes`` of decoded pixels beyond a chunk (default
    :data:`~genprint.methods.two_pass.KEEP_DECODED_BYTES`; :mod:`genprint.methods.two_pass`;
    ``on_read(n)``: ``n`` more files read in the first pass); the others get every decoded
    image in ``attributor.fit``.
    """
    attributor.check_settings()  # before reading any image
    if attributor.fits_on_features:
        from genprint.methods import two_pass

        size = attributor.min_size
        read, featurise = two_pass.local_passes(
            attributor, size, on_read,  # type: ignore[arg-type]
            getattr(attributor, "on_progress", None),
            two_pass.KEEP_DECODED_BYTES if keep_decoded_bytes is None else keep_decoded_bytes)
        return two_pass.fit_in_two_passes(attributor, train, val,  # type: ignore[arg-type]
                                          read, featurise)
    min_size = attributor.min_size
    tr_imgs, tr_idx, tr_err = load_items([i.path for i in train], min_size=min_size)
    va_imgs, va_idx, va_err = load_items([i.path for i in val], min_size=min_size)
    tr = ReadSplit(tr_idx, [i.shape for i in tr_imgs], fingerprints(tr_imgs), tr_err)
    va = ReadSplit(va_idx, [i.shape for i in va_imgs], fingerprints(va_imgs), va_err)
    refuse_lost_sources(train, tr, val, va)
    extra = ({"train_origins": [train[k].origin for k in tr_idx],
              "val_origins": [val[k].origin for k in va_idx]}
             if attributor.uses_origins else {})
    attributor.fit(  # type: ignore[attr-defined]
        tr_imgs, [train[k].source for k in tr_idx], va_imgs, [val[k].source for k in va_idx],
        **extra)
    record_fit(attributor, train, tr, val, va, min_size)
    return tr_err + va_err


@dataclass
class ReadSplit:
    """What reading one split's files gave, without the pixels: enough to plan a fit and to
    record what it was fitted on (the pixels themselves can be read elsewhere, e.g. on Ray)."""

    kept: list[int]
    """Positions, in the split's items, of the files that were read as images."""
    shapes: list[tuple[int, ...]]
    """Their decoded shapes (one per kept file)."""
    fingerprints: np.ndarray
    """Their pixel fingerprints, (len(kept), 24) uint8 (:mod:`genprint.io.fingerprint`)."""
    errors: list[tuple[Path, ImageError]]
    """The files that could not be used, with why."""


def refuse_lost_sources(train: Sequence[Item], tr: ReadSplit, val: Sequence[Item],
                        va: ReadSplit) -> None:
    """A clear ValueError when every image of a source in a split was refused."""
    _refuse_lost_sources(train, tr.kept, tr.errors, "training")
    _refuse_lost_sources(val, va.kept, va.errors, "validation")


def record_fit(attributor: Attributor, train: Sequence[Item], tr: ReadSplit,
               val: Sequence[Item], va: ReadSplit, min_size: int) -> None:
    """After a fit on the kept files of ``train`` and ``val``: the model's training
    fingerprints (of the images the fit used) and ``training_info_`` (data digest, counts,
    warnings about the data)."""
    tr_idx, va_idx = tr.kept, va.kept
    # what the fit used (a method may leave some images out), and what it was given
    used_tr, used_va = attributor.fit_used_ or (range(len(tr_idx)), range(len(va_idx)))
    attributor.training_fingerprints_ = np.unique(
        np.concatenate([tr.fingerprints[list(used_tr)], va.fingerprints[list(used_va)]]),
        axis=0)
    attributor.training_info_ = {
        **getattr(attributor, "training_info_", {}),
        "data_digest": data_digest(
            as_keys(np.concatenate([tr.fingerprints, va.fingerprints])),
            [str(train[k].source) for k in tr_idx] + [str(val[k].source) for k in va_idx],
            ["train"] * len(tr_idx) + ["val"] * len(va_idx)),
        "val_data_digest": data_digest(
            as_keys(va.fingerprints), [str(val[k].source) for k in va_idx],
            ["val"] * len(va_idx)),
        "data_min_size": min_size,
        "n_train": len(used_tr), "n_val": len(used_va),
        "n_skipped": len(tr.errors) + len(va.errors),
        "warnings": [*getattr(attributor, "fit_warnings_", []),
                     *data_warnings(train, tr_idx, val, va_idx,
                                    few_validation=attributor.thresholds_from_validation,
                                    val_used=[va_idx[k] for k in used_va]),
                     *confound_warnings([train[k] for k in tr_idx], tr.shapes),
                     *repeat_warnings([train[k] for k in tr_idx], tr.fingerprints,
                                      [val[k] for k in va_idx], va.fingerprints)],
    }


def repeat_warnings(train: Sequence[Item], train_fp: np.ndarray, val: Sequence[Item],
                    val_fp: np.ndarray, examples: int = 3) -> list[str]:
    """Warnings when one picture (same pixels, see :mod:`genprint.io.fingerprint`) is given
    under two sources, or is both a training and a validation image. The first teaches the
    model a contradiction; the second calibrates thresholds on an image the model was trained
    on, so they no longer say how new images of the source fare."""
    seen: dict[bytes, list[tuple[str, Item]]] = {}
    for split, items, fp in (("training", train, train_fp), ("validation", val, val_fp)):
        for item, key in zip(items, as_keys(fp), strict=True):
            seen.setdefault(key, []).append((split, item))
    two_sources = [g for g in seen.values() if len({i.source for _, i in g}) > 1]
    both_splits = [g for g in seen.values() if len({s for s, _ in g}) > 1
                   and len({i.source for _, i in g}) == 1]

    def shown(groups: list[list[tuple[str, Item]]]) -> str:
        return "; ".join(" = ".join(f"{i.path.name} ({i.source}, {s})" for s, i in g[:3])
                         for g in groups[:examples]) + ("; ..." if len(groups) > examples else "")

    out = []
    if two_sources:
        out.append(f"{len(two_sources)} picture(s) appear under two or more sources with the "
                   f"same pixels: {shown(two_sources)}. The model is taught that one picture "
                   "has two sources; keep each picture under its one true source")
    if both_splits:
        out.append(f"{len(both_splits)} validation picture(s) are also training pictures (the "
                   f"same pixels): {shown(both_splits)}. Thresholds calibrated on them do not "
                   "say how new images fare; keep each picture in one split")
    return out


FEW_VALIDATION_IMAGES = 20
"""Below this many validation images, a source's threshold is flagged as uncertain: the 95%
acceptance is then set by a handful of images (at 95%, by the worst one for every n ≤ 38; the
rule is :mod:`genprint.methods.thresholds`)."""


def _usage(items: Sequence[Item], kept: Sequence[int]) -> tuple[Counter, Counter]:
    """(files per source, files read per source) of ``items``, ``kept`` being those read."""
    return Counter(i.source for i in items), Counter(items[k].source for k in kept)


def _refuse_lost_sources(items: Sequence[Item], kept: Sequence[int],
                         errors: Sequence[tuple[Path, ImageError]], split: str) -> None:
    """A clear error when every image of a source in ``items`` was refused."""
    total, used = _usage(items, kept)
    lost = sorted(s for s in total if s is not None and used[s] == 0)
    if not lost:
        return
    by_path = {str(p): e for p, e in errors}
    parts = []
    too_small = False
    for src in lost:
        errs = [by_path[str(i.path)] for i in items if i.source == src and str(i.path) in by_path]
        reasons = Counter(e.reason for e in errs)
        too_small |= any(e.code == "too_small" for e in errs)
        reason = reasons.most_common(1)[0][0] if reasons else "unreadable"
        parts.append(f"{src!r} ({total[src]} file(s); e.g. {reason})")
    raise ValueError(f"every {split} image of these sources was refused: {'; '.join(parts)}. "
                     "Fix or replace the files"
                     + (" (or choose a smaller patch size)" if too_small else "")
                     + " rather than train without them")


def data_warnings(train: Sequence[Item], train_kept: Sequence[int], val: Sequence[Item],
                  val_kept: Sequence[int], few_validation: bool = True,
                  val_used: Sequence[int] | None = None) -> list[str]:
    """What a user should know about the data a model was fitted on: sources that lost most of
    their files (``*_kept``: the positions of the files that could be read), and thresholds
    resting on few validation images (``val_used``: those the fit used, when it left some of
    the read ones out; default ``val_kept``)."""
    out = []
    for split, items, kept in (("training", train, train_kept), ("validation", val, val_kept)):
        total, used = _usage(items, kept)
        for src in sorted(s for s in total if s is not None):
            if 0 < used[src] < total[src] / 2:
                out.append(f"{src}: only {used[src]} of its {total[src]} {split} images could be "
                           "used (see the skipped files)")
    used_val = _usage(val, val_kept if val_used is None else val_used)[1]
    few = sorted((n, s) for s, n in used_val.items() if s is not None and n < FEW_VALIDATION_IMAGES)
    if few and few_validation:
        listed = ", ".join(f"{s} ({n})" for n, s in few)
        out.append(f"thresholds rest on fewer than {FEW_VALIDATION_IMAGES} validation images for: "
                   f"{listed}; how often such a source's new images are accepted is uncertain "
                   "(add validation images; for data without a split column, a larger "
                   "--val-fraction holds out more)")
    return out


CONFOUND_ACCURACY = 0.8
"""A file format or image size that alone names the source of at least this share of the
training images (and 0.3 more than guessing the largest source) is flagged."""


def confound_warnings(items: Sequence[Item], shapes: Sequence[tuple[int, ...]]) -> list[str]:
    """Warnings when the file format or the image size alone tells the sources apart: a model
    can learn such a difference instead of the source (the built-in benchmark gives every image
    the same final step for that reason). Format = the file's extension; size = width × height
    (``shapes``: each image's decoded ``(height, width, ...)``).

    How well a property names the source is measured leave-one-out: each image's source is
    guessed as the most common source among the *other* images with the same value (a value no
    other image has gives no clue, so photographs of varied sizes do not count as a confound),
    and compared with guessing the largest source."""
    labelled = [(item, shape) for item, shape in zip(items, shapes, strict=True)
                if item.source]
    if len({item.source for item, _ in labelled}) < 2:
        return []
    labels = [str(item.source) for item, _ in labelled]
    formats = [_extension(item.path) for item, _ in labelled]
    sizes = [f"{shape[1]}×{shape[0]}" for _, shape in labelled]
    out = []
    for what, values in (("file format", formats), ("image size", sizes)):
        named, chance = _leave_one_out_accuracy(values, labels)
        if named >= CONFOUND_ACCURACY and named - chance >= 0.3:
            per: dict[str, Counter[str]] = {}
            for v, src in zip(values, labels, strict=True):
                per.setdefault(src, Counter())[v] += 1
            listed = "; ".join(f"{src}: {', '.join(v for v, _ in c.most_common(2))}"
                               for src, c in sorted(per.items()))
            out.append(f"the {what} alone names the source of {named:.0%} of the training "
                       f"images (guessing the largest source: {chance:.0%}) — {listed}: a "
                       f"model can learn the {what} instead of the source; make {what}s alike "
                       "across sources")
    if not any(w.startswith("the file format") for w in out):
        out.extend(_own_format_warnings(formats, labels))
    return out


OWN_FORMAT_SHARE = 0.9
"""A source with at least this share of its training images in a file format that at most
1 − this share of the other sources' training images have is flagged (e.g. real photographs
as JPEG, generators as PNG)."""


def _own_format_warnings(formats: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Sources (≥ 5 images) whose images are almost all in a format the other sources hardly
    use: the format's own traces (JPEG's 8×8 blocks) then name the source, even when the format
    does not name most of the training images (several generators in PNG, real photographs in
    JPEG)."""
    by_source: dict[str, Counter[str]] = {}
    for fmt, src in zip(formats, labels, strict=True):
        by_source.setdefault(src, Counter())[fmt] += 1
    out = []
    for src, counts in sorted(by_source.items()):
        fmt, n = counts.most_common(1)[0]
        total = sum(counts.values())
        others = Counter[str]()
        for other, c in by_source.items():
            if other != src:
                others.update(c)
        n_others = sum(others.values())
        if (total >= 5 and n_others and n >= OWN_FORMAT_SHARE * total
                and others[fmt] <= (1 - OWN_FORMAT_SHARE) * n_others):
            main = ", ".join(f for f, _ in others.most_common(2))
            out.append(f"{src}: {n} of its {total} training images are {fmt}, against "
                       f"{others[fmt]} of the other sources' {n_others} (mostly {main}): a "
                       "model can learn the format's traces instead of the source; give every "
                       "source the same format")
    return out


def _extension(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"jpeg": "jpg", "tiff": "tif"}.get(ext, ext) or "(none)"


def _leave_one_out_accuracy(values: Sequence[str], labels: Sequence[str]) -> tuple[float, float]:
    """(share of images whose source the value names, leave-one-out; share named by always
    guessing the largest source)."""
    by_value: dict[str, Counter[str]] = {}
    for v, label in zip(values, labels, strict=True):
        by_value.setdefault(v, Counter())[label] += 1
    total = Counter(labels)

    def guess(counts: Counter[str], label: str) -> str | None:
        """The most common source of ``counts`` without one image of ``label`` (None if empty)."""
        others = counts.copy()
        others[label] -= 1
        return others.most_common(1)[0][0] if sum(others.values()) > 0 else None

    # the guesses depend only on (value, label), not on the image: computed once per pair
    by_label = {label: guess(total, label) for label in total}
    by_pair = {(v, label): guess(c, label) for v, c in by_value.items() for label in c}
    named = 0
    for v, label in zip(values, labels, strict=True):
        named += (by_pair[v, label] or by_label[label]) == label
    # chance: always guessing the largest source (the leave-one-out version of it is 0% for
    # balanced sources, which reads as nonsense in the warning)
    return named / len(labels), max(total.values()) / len(labels)
