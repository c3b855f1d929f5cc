"""Calibration (RONAN's Algorithm 1) and the one-sided membership test.

1. Sample ``n`` images from the generator G (seeds derived from ``genprint-calibration:NAME``,
   disjoint from every seed the benchmark builder and the benchmarks use), quantise them to
   uint8 as any image file would be, and invert them with fixed settings.
2. The *calibrated score* of an image is ``log(loss)`` (default), or with complexity
   calibration (RONAN's choice) ``log(loss / C(x))`` where ``C`` is the 2-D entropy of the image
   (:mod:`genprint.verify.complexity`). The scores of G's own samples form the *belonging
   distribution*. Complexity calibration is off by default because on the zoo at 32×32 it never
   helped: the 2-D entropy of natural and generated 32×32 images is nearly constant (9.5–9.9
   bits of at most 10), it left the GAN / VAE AUCs unchanged and lowered the latent-diffusion
   ones (0.989 → 0.975 and 0.986 → 0.963, ``benchmarks/invert_auc.py``).
   With the **detail adjustment** (``detail=True``) the score is also corrected for how much
   detail the image has: ``s = log(loss) − (a + b · log D(x))``, where ``D`` is the mean
   squared Laplacian of the pixels (:func:`~genprint.verify.complexity.log_detail`) and the
   line ``a + b · log D`` is fitted by least squares on G's own calibration samples only (no
   other image is used). The calibration scores are the *leave-one-out* residuals (each member
   against the line fitted without it), so that they are exchangeable with a fresh member's
   residual. Why: after re-encoding, what G cannot reproduce of its own image is the
   processing's error, which grows with the image's detail (the members' log-loss under JPEG
   75 correlates with log D at r = 0.63–0.98); without the adjustment, a smooth image of
   another generator fits about as well as a detailed member. RONAN's entropy is such a
   correction with a fixed slope of 1; here the slope is learnt (0.34–0.81 under JPEG 75). It
   is on by default for calibrations under a condition and off for clean ones
   (:func:`detail_by_default`).
3. For a new image with score ``s`` the null hypothesis is "G made it". A larger loss than G's
   own samples is evidence against it, so the test is one-sided:

   * ``ecdf`` (default): ``p = (1 + #{calibration scores ≥ s}) / (n + 1)``, the conformal
     p-value; for a member exchangeable with the calibration samples, P(p ≤ α) ≤ α with no
     assumption on the distribution's shape (the smallest possible p is 1 / (n + 1));
   * ``normal``: ``p = 1 − Φ((s − μ) / σ)`` with μ, σ fitted to the calibration scores
     (smooth and reaches small p-values, but assumes log-losses are normal).

   The image belongs to G when ``p ≥ α``.

The calibration is a JSON file holding the scores, the inversion settings it was made with and
the checksum of the generator's weights; verifying with other settings or other weights is refused.

**Conditions.** Images met in the wild have often been re-encoded (JPEG), blurred or noised, and
that alone raises their reconstruction loss: against a clean calibration, G's own images would
be rejected. RONAN's answer is a threshold per perturbation picked by hand; here a calibration
can be made *under a condition* (a perturbation of :mod:`genprint.evaluation.perturb`, e.g.
``jpeg75``): G's samples go through it before inversion, so the belonging distribution is that of
G's images after the same processing, and the p-values keep their meaning. The condition is
stored in the file (a calibration is only used for the condition it was made for) and in its
default name (``NAME.jpeg75.calibration.json`` next to ``NAME.calibration.json``).
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genprint.storage.atomic import write_text_atomic
from genprint.verify.complexity import complexities, log_detail
from genprint.verify.generators import GeneratorHandle
from genprint.verify.inversion import InversionSettings, default_settings, invert
from genprint.verify.noise_model import NoiseModel, expected_feature_count, noise_model_seed

CALIBRATION_VERSION = 3
"""The newest calibration format this genprint reads. A file records the oldest format that
can read it: 1 (log-loss, optionally entropy-normalised); 2, a stage ``noise`` calibration
holding the members' noise model; 3, with the detail adjustment. Older genprint would score
such a file with another statistic, so it refuses it."""
PVALUES = ("ecdf", "normal")
MIN_COMPLEXITY = 0.5
"""Floor of the 2-D entropy (bits) in the calibrated score, so flat images stay finite."""


def condition_path(path: Path, condition: str | None) -> Path:
    """Where the calibration for ``condition`` lives, given the clean calibration's ``path``:
    ``NAME.calibration.json`` → ``NAME.CONDITION.calibration.json``."""
    if not condition:
        return path
    suffix = ".calibration.json"
    stem = path.name[: -len(suffix)] if path.name.endswith(suffix) else path.stem
    return path.with_name(f"{stem}.{condition}{suffix}")


def apply_condition(images: np.ndarray, condition: str | None, seed: int = 0) -> np.ndarray:
    """``images`` (N×H×W×3 uint8) after the perturbation ``condition``, image ``i`` with seed
    ``seed + i`` (random perturbations such as ``noise`` then draw independently of any other
    image set that uses another ``seed``). Perturbations that change the size are refused:
    inversion needs the generator's resolution and images are never resized."""
    if not condition:
        return images
    from genprint.evaluation.perturb import perturbation

    try:
        fn = perturbation(condition, min_size=images.shape[1])
    except KeyError as exc:
        raise ValueError(str(exc)) from None
    h, w = images.shape[1:3]
    probe = np.zeros((2 * h, 2 * w, 3), np.uint8)  # a crop may leave a min-size image whole
    if fn(probe, 0).shape != probe.shape:
        raise ValueError(f"condition {condition!r} changes the image size; inversion needs "
                         "images at the generator's resolution (images are never resized)")
    return np.stack([fn(img, seed + i) for i, img in enumerate(images)])


class CalibrationError(ValueError):
    """A calibration that is missing, unreadable or does not match the generator / settings."""


def calibration_seed(name: str) -> int:
    """Seed of the calibration samples of generator ``name``."""
    return zlib.crc32(f"genprint-calibration:{name}".encode()) & 0x7FFFFFFF


def calibrated_scores(losses: np.ndarray, images: np.ndarray | None, complexity: bool,
                      levels: int = 256, detail: tuple[float, float] | None = None
                      ) -> np.ndarray:
    """``log(loss)`` or ``log(loss / max(C(x), MIN_COMPLEXITY))`` per image; with ``detail``
    = (intercept, slope), minus ``intercept + slope · log_detail(x)`` (see module doc)."""
    score = np.log(np.maximum(np.asarray(losses, dtype=np.float64), 1e-30))
    if (complexity or detail is not None) and images is None:
        raise ValueError("complexity calibration and the detail adjustment need the images")
    if complexity:
        score = score - np.log(np.maximum(complexities(images, levels), MIN_COMPLEXITY))
    if detail is not None:
        score = score - (detail[0] + detail[1] * log_detail(images))
    return score


def detail_by_default(condition: str | None, settings: InversionSettings) -> bool:
    """Whether calibration uses the detail adjustment when not told: under a condition, for
    reconstruction losses. Chosen on validation images (docs/invert.md): under JPEG 75 it raised
    every GAN / VAE / LDM generator's AUC (e.g. gan-nearest-s0 0.927 → 0.998); on clean images
    it can hurt (gan-nearest-s0 0.997 → 0.846: there a member's loss *falls* with detail). Stage
    ``noise`` (pixel diffusion) was not measured with it, so it stays off there."""
    return condition is not None and settings.stage != "noise"


def fit_detail(scores: np.ndarray, log_details: np.ndarray
               ) -> tuple[tuple[float, float], np.ndarray]:
    """Least-squares line of the members' scores on their log detail, and each member's
    *leave-one-out* residual (its distance from the line fitted without it), which is what a
    fresh member's residual is exchangeable with. Needs ≥ 3 members."""
    y = np.asarray(scores, dtype=np.float64)
    x = np.asarray(log_details, dtype=np.float64)
    n = len(y)
    if n < 3 or len(x) != n:
        raise ValueError("the detail adjustment needs at least 3 calibration samples")
    sxx = float(((x - x.mean()) ** 2).sum())
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx) if sxx > 0 else 0.0
    intercept = float(y.mean() - slope * x.mean())
    residual = y - (intercept + slope * x)
    leverage = 1.0 / n + ((x - x.mean()) ** 2 / sxx if sxx > 0 else 0.0)
    return (intercept, slope), residual / np.maximum(1.0 - leverage, 1e-12)


@dataclass
class Calibration:
    """The belonging distribution of one generator and how it was made."""

    generator: str
    spec: str
    settings: InversionSettings
    scores: np.ndarray
    losses: np.ndarray
    complexity: bool = False
    pvalue: str = "ecdf"
    resolution: int = 32
    seed: int = 0
    sha256: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    condition: str | None = None
    """Perturbation the calibration samples went through (None: clean; see module doc)."""
    noise_model: NoiseModel | None = None
    """Stage ``noise``: the members' noise model the losses are distances from (fitted on
    other samples than the calibration's; see :mod:`genprint.verify.noise_model`)."""
    detail: tuple[float, float] | None = None
    """Detail adjustment (intercept, slope) fitted on the members (see module doc)."""

    @property
    def n(self) -> int:
        """Number of calibration samples."""
        return len(self.scores)

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores, ddof=1)) if self.n > 1 else 1.0

    def score(self, losses: np.ndarray, images: np.ndarray | None) -> np.ndarray:
        """Calibrated scores of new images from their losses (and pixels, for complexity)."""
        return calibrated_scores(losses, images, self.complexity, detail=self.detail)

    def z_scores(self, scores: np.ndarray) -> np.ndarray:
        """How many calibration standard deviations above the belonging mean (+inf for a score
        that is not a number: a failed inversion is no evidence of membership)."""
        z = (np.asarray(scores, dtype=np.float64) - self.mean) / max(self.std, 1e-12)
        return np.where(np.isnan(z), np.inf, z)

    def p_values(self, scores: np.ndarray, method: str | None = None) -> np.ndarray:
        """One-sided p-values of "the generator made it" (see module doc)."""
        method = method or self.pvalue
        s = np.asarray(scores, dtype=np.float64)
        if method == "ecdf":
            ref = np.sort(self.scores)
            n_ge = len(ref) - np.searchsorted(ref, s, side="left")
            return (1.0 + n_ge) / (len(ref) + 1.0)  # NaN sorts last: the floor 1/(N+1)
        if method == "normal":
            z = self.z_scores(s)
            return np.array([0.5 * math.erfc(v / math.sqrt(2)) for v in z])
        raise ValueError(f"p-value method must be one of {', '.join(PVALUES)}, got {method!r}")

    # ------------------------------------------------------------------ checks
    def check(self, gen: GeneratorHandle, settings: InversionSettings | None = None,
              condition: str | None = None) -> None:
        """Refuse a calibration made for other weights, another resolution, other settings or
        another condition."""
        if (self.condition or None) != (condition or None):
            raise CalibrationError(
                f"the calibration of {gen.name} was made for "
                f"{_condition_text(self.condition)}, not for {_condition_text(condition)}; "
                f"calibrate with `genprint verify calibrate --generator {gen.spec}"
                + (f" --condition {condition}`" if condition else "`"))
        if not (self.sha256 and gen.sha256) and self.generator != gen.name \
                and self.spec != gen.spec:
            raise CalibrationError(
                f"this calibration was made for the generator {self.generator!r} "
                f"({self.spec}), not for {gen.name!r} ({gen.spec}), and no weights checksum "
                f"shows they are the same; calibrate with `genprint verify calibrate "
                f"--generator {gen.spec}`")
        if gen.sha256 and not self.sha256:
            import warnings

            warnings.warn(f"the calibration of {gen.name} records no weights checksum (made by "
                          "an older genprint): it cannot tell whether the weights changed; "
                          f"recalibrate with `genprint verify calibrate --generator {gen.spec}` "
                          "to tie it to them", stacklevel=2)
        if self.sha256 and gen.sha256 and self.sha256 != gen.sha256:
            raise CalibrationError(
                f"the calibration of {gen.name} was made for other weights (sha256 "
                f"{self.sha256[:12]}…, the generator's is {gen.sha256[:12]}…); recalibrate "
                f"with `genprint verify calibrate --generator {gen.spec}`")
        if self.noise_model is not None:
            expected = expected_feature_count(gen.latent_shape)
            if expected != len(self.noise_model.mean):
                given = (f"give {expected}" if expected is not None
                         else "have no spatial axes")
                raise CalibrationError(
                    f"the noise model of {gen.name}'s calibration has "
                    f"{len(self.noise_model.mean)} features; the generator's latents "
                    f"{gen.latent_shape} {given}; recalibrate")
        if gen.resolution != self.resolution:
            raise CalibrationError(f"the calibration of {gen.name} is for {self.resolution}px "
                                   f"images, the generator makes {gen.resolution}px ones")
        if settings is not None and settings.fingerprint() != self.settings.fingerprint():
            mine, theirs = settings.fingerprint(), self.settings.fingerprint()
            diff = ", ".join(f"{k}={mine[k]!r} (calibrated with {theirs[k]!r})"
                             for k in mine if mine[k] != theirs.get(k))
            raise CalibrationError(
                f"inversion settings differ from the calibration of {gen.name}: {diff}; "
                "verify with the calibration's settings or recalibrate with the new ones")

    # ------------------------------------------------------------------ storage
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the file format)."""
        from genprint import __version__

        return {
            "calibration_version": 3 if self.detail else 2 if self.noise_model else 1,
            "generator": self.generator,
            "spec": self.spec,
            "sha256": self.sha256,
            "resolution": self.resolution,
            "n": self.n,
            "seed": self.seed,
            "settings": self.settings.fingerprint(),
            "complexity": self.complexity,
            "condition": self.condition,
            "statistic": self.statistic,
            "pvalue": self.pvalue,
            "mean": self.mean,
            "std": self.std,
            "scores": [float(s) for s in self.scores],
            "losses": [float(v) for v in self.losses],
            "info": {"genprint_version": __version__, **self.info},
            **({"noise_model": self.noise_model.to_json()} if self.noise_model else {}),
            **({"detail": {"intercept": self.detail[0], "slope": self.detail[1]}}
               if self.detail else {}),
        }

    @property
    def statistic(self) -> str:
        """What the calibrated score is, in words (stored in the file for readers)."""
        loss = ("squared Mahalanobis distance of the recovered noise from the members' noise "
                "model" if self.noise_model else "loss")
        text = f"log({loss} / 2-D entropy)" if self.complexity else f"log({loss})"
        if self.detail:
            text += (f" − ({self.detail[0]:.4g} + {self.detail[1]:.4g} · log detail), "
                     "calibration scores leave-one-out")
        return text

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "calibration") -> Calibration:
        """Rebuild from :meth:`to_json` output (a newer format version is refused)."""
        version = d.get("calibration_version", 0)
        if not isinstance(version, int) or version > CALIBRATION_VERSION:
            raise CalibrationError(f"{where}: calibration format version {version} is newer "
                                   "than this genprint understands; upgrade genprint")
        try:
            model = (NoiseModel.from_json(d["noise_model"]) if d.get("noise_model") is not None
                     else None)
            stage = d["settings"].get("stage", "chain")
            if model is not None and stage != "noise":
                raise ValueError(f"a noise model with inversion stage {stage!r} (only stage "
                                 "'noise' uses one)")
            if model is None and stage == "noise" and version >= 2:
                raise ValueError("stage 'noise' without its noise model (its scores are "
                                 "distances from that model)")
            detail = None
            if d.get("detail") is not None:
                detail = (float(d["detail"]["intercept"]), float(d["detail"]["slope"]))
                if not all(math.isfinite(v) for v in detail):
                    raise ValueError("the detail adjustment is not finite")
            scores = np.asarray(d["scores"], dtype=np.float64)
            if scores.ndim != 1 or len(scores) < 2 or not np.isfinite(scores).all():
                raise ValueError("its scores must be at least 2 finite numbers")
            return cls(
                generator=d["generator"], spec=d["spec"],
                settings=InversionSettings.from_dict({"stage": "chain", **d["settings"]}),
                scores=scores,
                losses=np.asarray(d["losses"], dtype=np.float64),
                complexity=bool(d["complexity"]), pvalue=d.get("pvalue", "ecdf"),
                resolution=int(d["resolution"]), seed=int(d["seed"]), sha256=d.get("sha256"),
                info=dict(d.get("info", {})), condition=d.get("condition") or None,
                noise_model=model, detail=detail,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CalibrationError(f"{where}: not a valid calibration ({exc})") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically (temporary file renamed into place)."""
        return write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Read a calibration JSON (clear errors for missing or malformed files)."""
        p = Path(path)
        if not p.is_file():
            raise CalibrationError(f"no calibration at {p}")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"{p}: cannot read the calibration ({exc})") from None
        if not isinstance(d, dict):
            raise CalibrationError(f"{p}: not a valid calibration")
        return cls.from_json(d, str(p))


def calibrate(
    gen: GeneratorHandle,
    n: int = 200,
    settings: InversionSettings | None = None,
    complexity: bool = False,
    pvalue: str = "ecdf",
    seed: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    condition: str | None = None,
    model_n: int | None = None,
    detail: bool | None = None,
) -> Calibration:
    """Invert ``n`` of the generator's own samples and return its belonging distribution.

    ``settings`` default to :func:`~genprint.verify.inversion.default_settings` of the generator.
    With a ``condition`` (a perturbation name, e.g. ``jpeg75``) the samples go through it first.
    Stage ``noise`` first fits the members' noise model on ``model_n`` (default ``n``) other
    samples, drawn from their own seed and put through the same condition. ``detail`` fits the
    detail adjustment on the calibration samples (see module doc); by default (None) it is on
    under a condition and off for clean images, as :func:`detail_by_default` says.
    """
    if n < 2:
        raise ValueError("calibration needs at least 2 samples")
    if pvalue not in PVALUES:
        raise ValueError(f"p-value method must be one of {', '.join(PVALUES)}")
    settings = settings or default_settings(gen)
    seed = calibration_seed(gen.name) if seed is None else int(seed)
    t0 = time.perf_counter()
    model = None
    if settings.stage == "noise":
        model_n = n if model_n is None else int(model_n)
        if model_n < 2:
            raise ValueError("the noise model needs at least 2 samples")
        model_seed = noise_model_seed(gen.name, seed)
        fit_images = apply_condition(gen.sample(model_n, model_seed), condition, model_seed)
        model = NoiseModel.fit(invert(gen, fit_images, settings, on_progress=on_progress).latents,
                               model_seed)
    images = gen.sample(n, seed)  # members are made with the generator's own sampler
    images = apply_condition(images, condition, seed)
    result = invert(gen, images, settings, on_progress=on_progress, noise_model=model)
    scores = calibrated_scores(result.loss, images, complexity)
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).sum())
        raise CalibrationError(f"{bad} of its {n} own samples gave a loss that is "
                               "not a finite number, so no belonging distribution can be built "
                               "(does its decode give NaN or inf?)")
    line = None
    if detail_by_default(condition, settings) if detail is None else detail:
        line, scores = fit_detail(scores, log_detail(images))
    return Calibration(
        generator=gen.name, spec=gen.spec, settings=settings,
        scores=scores, losses=result.loss, detail=line,
        complexity=complexity, pvalue=pvalue, resolution=int(images.shape[1]), seed=seed,
        sha256=gen.sha256, condition=condition or None, noise_model=model,
        info={"seconds": round(time.perf_counter() - t0, 2),
              "sample_steps_per_image": round(result.sample_steps / n, 1),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    )


def _condition_text(condition: str | None) -> str:
    return f"images under condition {condition!r}" if condition else "clean images"
