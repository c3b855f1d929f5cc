"""Verifying images against one or several calibrated generators.

A :class:`Verifier` pairs a generator with its calibration. :func:`verify_arrays` inverts every
image through every verifier (one batch per generator), computes per generator the loss, the
calibrated score, the p-value and whether the image belongs (``p ≥ α``), and attributes the image
to the accepting generator with the highest p-value (ties: the lower calibrated z-score), or
``unknown`` when none accepts.

Images must be the generator's resolution: a larger image is centre-cropped (never resized, and
the row says so), a smaller one is refused for that generator.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genprint import UNKNOWN
from genprint.io.content import UNIFORM_SHARE, is_uniform
from genprint.verify.calibration import Calibration, CalibrationError, condition_path
from genprint.verify.generators import GeneratorHandle
from genprint.verify.inversion import InversionSettings, invert

DEFAULT_ALPHA = 0.05


@dataclass
class Verifier:
    """A generator and its calibration; inverts with the calibration's settings."""

    generator: GeneratorHandle
    calibration: Calibration
    batch_size: int = 256

    @property
    def name(self) -> str:
        return self.generator.name

    @property
    def settings(self) -> InversionSettings:
        return self.calibration.settings.with_(batch_size=self.batch_size)

    @classmethod
    def load(cls, generator: GeneratorHandle, path: str | os.PathLike[str] | None = None,
             settings: InversionSettings | None = None, batch_size: int = 256,
             condition: str | None = None) -> Verifier:
        """Read the generator's calibration (default: its usual place, or the place of its
        calibration for ``condition``) and check it fits."""
        where = Path(path) if path is not None else generator.calibration_path
        if where is None:
            raise CalibrationError(f"{generator.spec}: no default calibration place; give one "
                                   "with --calibration")
        if path is None:
            where = condition_path(where, condition)
        if not where.is_file():
            hint = f" --condition {condition}" if condition else ""
            raise CalibrationError(f"{generator.name} is not calibrated"
                                   f"{f' for condition {condition!r}' if condition else ''} "
                                   f"({where} does not exist); run `genprint verify calibrate "
                                   f"--generator {generator.spec}{hint}`")
        cal = Calibration.load(where)
        cal.check(generator, settings, condition)
        return cls(generator, cal, batch_size)


@dataclass
class Verdict:
    """One image against one generator."""

    loss: float
    calibrated_score: float
    p_value: float
    belongs: bool
    z: float
    """Calibrated score in standard deviations of the belonging distribution (tie-breaker)."""


@dataclass
class VerifyRow:
    """What ``verify`` says about one image (against every generator asked)."""

    path: str
    label: str | None = None
    """The attributed generator, or ``unknown`` when no generator accepts the image."""
    generator: str | None = None
    """The generator the headline numbers below are for (the label, or the best p-value)."""
    loss: float | None = None
    calibrated_score: float | None = None
    p_value: float | None = None
    belongs: bool | None = None
    alpha: float | None = None
    per_generator: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None
    error: str | None = None
    error_code: str | None = None
    sha256: str | None = None
    """Hex sha256 of the file's bytes as read and analysed (files only)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageTooSmall(ValueError):
    """An image smaller than the generator's resolution (images are never upsampled)."""


class ImageWithoutContent(ValueError):
    """A (nearly) uniform image: every generator reconstructs it almost perfectly, so a test of
    "this generator made it" says nothing about it."""


def fit_to_resolution(image: np.ndarray, size: int) -> tuple[np.ndarray, str | None]:
    """The centre ``size``×``size`` crop of ``image`` and a note when it was cropped."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ImageTooSmall(f"image is {w}×{h}, smaller than the generator's {size}×{size} "
                            "(images are never upsampled)")
    if (h, w) == (size, size):
        return image, None
    top, left = (h - size) // 2, (w - size) // 2
    return (np.ascontiguousarray(image[top : top + size, left : left + size]),
            f"centre-cropped from {w}×{h} to {size}×{size} (never resized)")


def testable_crop(image: np.ndarray, size: int) -> tuple[np.ndarray, str | None]:
    """:func:`fit_to_resolution`, refusing a crop that inversion cannot test: ImageTooSmall,
    or ImageWithoutContent when the crop is uniform."""
    crop, note = fit_to_resolution(image, size)
    if is_uniform(crop):
        raise ImageWithoutContent(
            f"the image is uniform (one colour covers ≥ {UNIFORM_SHARE:.0%} of its pixels): any "
            "generator reconstructs it, so inversion cannot test who made it")
    return crop, note


def check_alpha_reachable(calibration: Any, alpha: float, name: str) -> None:
    """Refuse an α the calibration cannot test: an empirical p-value from N calibration scores
    is never below 1 / (N + 1), so with α ≤ 1 / (N + 1) every image would "belong"."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha:g}")
    if getattr(calibration, "pvalue", "ecdf") != "ecdf":
        return
    n = len(calibration.scores)
    if alpha <= 1.0 / (n + 1):
        need = math.floor(1.0 / alpha)
        raise ValueError(
            f"alpha = {alpha:g} cannot be tested with the calibration of {name}: its N = {n} "
            f"own samples give p-values of at least 1/(N+1) = {1.0 / (n + 1):.3g}, so every "
            f"image would be accepted; calibrate again with --n {need} or more (or with --pvalue "
            "normal), or raise --alpha")


def verify_arrays(
    verifiers: Sequence[Verifier],
    images: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    on_progress: Callable[[int], None] | None = None,
) -> list[VerifyRow]:
    """Verify decoded uint8 H×W×3 images against every verifier (see module doc)."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    for v in verifiers:
        check_alpha_reachable(v.calibration, alpha, v.name)
    names = list(names) if names is not None else [f"<array {i}>" for i in range(len(images))]
    per: list[dict[str, Verdict]] = [{} for _ in images]
    notes: list[set[str]] = [set() for _ in images]
    errors: list[str | None] = [None] * len(images)
    codes: list[str] = ["too_small"] * len(images)
    for v in verifiers:
        size = v.generator.resolution
        ok, crops = [], []
        for i, img in enumerate(images):
            try:
                crop, note = testable_crop(img, size)
            except (ImageTooSmall, ImageWithoutContent) as exc:
                if errors[i] is None:  # the first reason, with its code
                    errors[i] = str(exc)
                    codes[i] = "no_content" if isinstance(exc, ImageWithoutContent) else "too_small"
                continue
            ok.append(i)
            crops.append(crop)
            if note:
                notes[i].add(note)
        if not crops:
            continue
        result = invert(v.generator, np.stack(crops), v.settings, on_progress=on_progress,
                        noise_model=v.calibration.noise_model)
        scores = v.calibration.score(result.loss, np.stack(crops))
        pvals = v.calibration.p_values(scores)
        zs = v.calibration.z_scores(scores)
        for k, i in enumerate(ok):
            per[i][v.name] = Verdict(float(result.loss[k]), float(scores[k]), float(pvals[k]),
                                     bool(pvals[k] >= alpha), float(zs[k]))
    return [_row(names[i], per[i], notes[i], errors[i], alpha, codes[i])
            for i in range(len(images))]


def _row(name: str, verdicts: dict[str, Verdict], notes: set[str], error: str | None,
         alpha: float, code: str = "too_small") -> VerifyRow:
    if not verdicts:
        return VerifyRow(name, error=error or "no generator could verify the image",
                         error_code=code)
    best = min(verdicts, key=lambda g: (-verdicts[g].p_value, verdicts[g].z))
    v = verdicts[best]
    note = "; ".join(sorted(notes)) or None
    if error:
        note = f"{note}; {error}" if note else error
    return VerifyRow(
        path=name, label=best if v.belongs else UNKNOWN, generator=best, loss=v.loss,
        calibrated_score=v.calibrated_score, p_value=v.p_value, belongs=v.belongs, alpha=alpha,
        per_generator={g: asdict(d) for g, d in verdicts.items()},
        note=note,
    )


def verify_files(
    verifiers: Sequence[Verifier],
    paths: Sequence[str | os.PathLike[str]],
    alpha: float = DEFAULT_ALPHA,
    batch_size: int = 64,
    on_progress: Callable[[int], None] | None = None,
) -> list[VerifyRow]:
    """Verify image files; unreadable files get a row with their reason, the rest goes on.

    ``on_progress(k)`` counts image × generator inversions done (unreadable files count as
    done for every generator). :func:`iter_verify_files` gives the same rows as they are ready.
    """
    return list(iter_verify_files(verifiers, paths, alpha, batch_size, on_progress))


def iter_verify_files(
    verifiers: Sequence[Verifier],
    paths: Sequence[str | os.PathLike[str]],
    alpha: float = DEFAULT_ALPHA,
    batch_size: int = 64,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[VerifyRow]:
    """:func:`verify_files`, one row at a time in input order, each as soon as it is final
    (a batch ends at ``batch_size`` images or 32 megapixels): a long verification that is
    stopped keeps the rows already yielded."""
    from genprint.io.batches import iter_images, ordered_batches
    from genprint.methods.base import BATCH_PIXELS

    min_side = min(v.generator.resolution for v in verifiers)

    def error_row(result: Any) -> VerifyRow:
        if on_progress:
            on_progress(len(verifiers))
        return VerifyRow(str(result.path), sha256=result.sha256, error=result.pixels.reason,
                         error_code=result.pixels.code)

    def run(images: list[np.ndarray], waiting: list[VerifyRow]) -> list[VerifyRow]:
        out = verify_arrays(verifiers, images, [w.path for w in waiting], alpha, on_progress)
        for row, w in zip(out, waiting, strict=True):
            row.sha256 = w.sha256
            row.note = "; ".join(n for n in (w.note, row.note) if n) or None  # how it was read
        return out

    yield from ordered_batches(
        iter_images(paths, min_size=min_side), batch_size=batch_size,
        batch_pixels=BATCH_PIXELS, error_row=error_row,
        placeholder=lambda r: VerifyRow(str(r.path), sha256=r.sha256,
                                        note="; ".join(r.notes) or None), run=run)
