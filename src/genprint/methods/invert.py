"""``invert``: white-box verification by generator inversion, as an attributor.

RONAN (Wang et al., NeurIPS 2023) with LatentTracer's encoder start (ICML 2024); the machinery
lives in :mod:`genprint.verify`. As an :class:`~genprint.methods.base.Attributor`:

* **classes** — the known sources that are generators it holds weights for: zoo names resolve to
  ``zoo:NAME``, others through the ``generators`` mapping (label → spec). ``real`` is *not* a
  class: the method is a verifier of generators and cannot recognise a camera image. An image
  that no known generator accepts is answered ``unknown`` — which is right for images of unknown
  generators and is also what real images get (evaluation counts real images as unknown for
  this method, :mod:`genprint.evaluation.evaluate`). Calling such images "real" would be wrong
  for every unknown generator's images, so the method does not.
* **fit** — calibrates each known generator on its *own* fresh samples (Algorithm 1; a stored
  calibration next to the weights is reused when it was made with the same settings). The
  labelled training / validation images are not needed: the threshold is the significance level.
* **scores** — per source, the p-value of "this generator made it"; the open-set score is the
  best p-value and every threshold is ``alpha`` (accepting ≈ 1 − α of a generator's own images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genprint.methods.base import METHODS, Attributor, Prediction
from genprint.storage.model_dir import ModelContents, ModelFormatError


@dataclass
class InvertPrediction(Prediction):
    """Per-source p-values, with calibrated z-scores to break ties between equal p-values."""

    z: np.ndarray | None = None


@METHODS.register("invert")
class InvertAttributor(Attributor):
    """Attribution by inverting every known generator (see module doc)."""

    method = "invert"
    thresholds_from_validation = False  # alpha on stored calibrations, not validation images

    def __init__(self, alpha: float = 0.05, calibration_n: int = 200,
                 settings: dict[str, Any] | None = None, generators: dict[str, str] | None = None,
                 use_stored: bool = True, complexity: bool = False, pvalue: str = "ecdf",
                 batch_size: int = 256) -> None:
        self.alpha = alpha
        self.calibration_n = calibration_n
        self.settings = dict(settings or {})
        self.generators = dict(generators or {})
        self.use_stored = use_stored
        self.complexity = complexity
        self.pvalue = pvalue
        self.batch_size = batch_size

    @classmethod
    def demo_params(cls, quick: bool) -> dict[str, Any]:
        """The default settings, so the shipped calibrations (N = 500) are reused: the demo
        measures the method as a user runs it, on fewer test images (:meth:`demo_test_cap`)."""
        return {}

    @classmethod
    def demo_test_cap(cls, quick: bool) -> int | None:
        """Inversion costs ≈ 0.2–0.8 s per image and known generator on one core, more for
        non-members, which keep 3 starts to step 100 (six generators are known in protocol
        ``all``): 3 (quick) or 15 test images per source (30 took ≈ 13 minutes)."""
        return 3 if quick else 15

    @property
    def min_size(self) -> int:
        verifiers = getattr(self, "verifiers_", None)
        return max((v.generator.resolution for v in verifiers), default=32) if verifiers else 32

    def _inversion_settings(self, handle: Any) -> Any:
        from genprint.verify.inversion import default_settings

        return default_settings(handle).with_(batch_size=self.batch_size, **self.settings)

    def _spec_for(self, source: str) -> str | None:
        from genprint.world.zoo import ZOO

        if source in self.generators:
            return self.generators[source]
        return f"zoo:{source}" if source in ZOO else None

    # ------------------------------------------------------------------ fitting
    def fit(self, train_images: Sequence[np.ndarray], train_labels: Sequence[str],
            val_images: Sequence[np.ndarray] = (), val_labels: Sequence[str] = ()
            ) -> InvertAttributor:
        """Calibrate every known source that is a generator (images are not used; see doc)."""
        from genprint.io.sources import check_source_names
        from genprint.verify.calibration import Calibration, CalibrationError, calibrate
        from genprint.verify.generators import resolve_one
        from genprint.verify.verifier import Verifier, check_alpha_reachable

        sources = sorted(set(train_labels) | set(val_labels))
        check_source_names(sources)
        verifiers, skipped, reused = [], [], []
        for source in sources:
            spec = self._spec_for(source)
            if spec is None:
                skipped.append(source)
                continue
            handle = resolve_one(spec)
            handle.name = source
            settings = self._inversion_settings(handle)
            cal = None
            if self.use_stored and handle.calibration_path and handle.calibration_path.is_file():
                try:
                    cal = Calibration.load(handle.calibration_path)
                    cal.check(handle, settings)
                    if cal.complexity != self.complexity or cal.n < self.calibration_n \
                            or (handle.sha256 and not cal.sha256):  # not tied to the weights
                        cal = None
                    else:
                        reused.append(source)
                except CalibrationError:
                    cal = None
            if cal is None:
                cal = calibrate(handle, self.calibration_n, settings, self.complexity,
                                self.pvalue)
            cal.pvalue = self.pvalue
            check_alpha_reachable(cal, self.alpha, source)  # else every image would "belong"
            verifiers.append(Verifier(handle, cal, self.batch_size))
        if not verifiers:
            raise ValueError("invert needs at least one known source that is a generator with "
                             f"weights; got {', '.join(sources) or 'none'}")
        self.verifiers_ = verifiers
        self.classes_ = [v.name for v in verifiers]
        self.model_sha256_ = None  # refitted: no saved model holds it until saved
        self.thresholds_ = np.full(len(verifiers), float(self.alpha))
        self.training_info_ = {
            **getattr(self, "training_info_", {}),
            "not_generators": skipped, "calibrations_reused": reused,
            "threshold_rule": f"p-value ≥ alpha = {self.alpha} (one-sided test per generator)",
        }
        return self

    # ------------------------------------------------------------------ inference
    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        from genprint.verify.verifier import verify_arrays

        rows = verify_arrays(self.verifiers_, images, alpha=self.alpha)
        out: list[Prediction] = []
        for image, row in zip(images, rows, strict=True):
            untested = [c for c in self.classes_ if c not in row.per_generator]
            if untested:  # no p-value is not evidence against: the image gets an error row
                out.append(self._untested(image, untested))
                continue
            p = np.array([row.per_generator[c]["p_value"] for c in self.classes_],
                         dtype=np.float64)
            z = np.array([row.per_generator[c]["z"] for c in self.classes_], dtype=np.float64)
            out.append(InvertPrediction(scores=p, z=z))
        return out

    def _untested(self, image: np.ndarray, untested: list[str]) -> InvertPrediction:
        """The prediction of an image that some known generators could not test: its centre
        crop at their resolution is too small or uniform (the check of :func:`verify_arrays`,
        :func:`~genprint.verify.verifier.testable_crop`)."""
        from genprint.io.content import UNIFORM_SHARE
        from genprint.verify.verifier import ImageTooSmall, testable_crop

        size = {v.name: v.generator.resolution for v in self.verifiers_}
        refused: dict[str, Exception] = {}
        for c in untested:
            try:
                testable_crop(image, size[c])
            except ValueError as exc:  # ImageTooSmall or ImageWithoutContent
                refused[c] = exc
        small = [c for c, exc in refused.items() if isinstance(exc, ImageTooSmall)]
        if small:
            reason = (f"image is {image.shape[1]}×{image.shape[0]}, smaller than the "
                      f"{size[small[0]]}×{size[small[0]]} crop of {', '.join(small)} "
                      "(images are never upsampled)")
            code = "too_small"
        else:
            names = list(refused) or untested
            side = size[names[0]]
            reason = (f"the centre {side}×{side} crop tested by {', '.join(names)} is uniform "
                      f"(one colour covers ≥ {UNIFORM_SHARE:.0%} of it): inversion cannot tell "
                      "whether " + ("it" if len(names) == 1 else "they") + " made it")
            code = "no_content"
        tested = [c for c in self.classes_ if c not in untested]
        if tested:  # the others did test it, but an answer must weigh every known generator
            reason += (f"; {', '.join(tested)} could test it, but an answer among the known "
                       "generators needs all of them (`genprint verify` gives each one's)")
        n = len(self.classes_)
        return InvertPrediction(scores=np.full(n, np.nan), z=np.full(n, np.nan), error=reason,
                                error_code=code)

    def decide(self, prediction: Prediction) -> tuple[int, float, float, bool]:
        """Candidate = highest p-value (ties: lowest calibrated z-score); unknown if p < α."""
        z = getattr(prediction, "z", None)
        if z is None:
            return super().decide(prediction)
        order = np.lexsort((z, -prediction.scores))
        cand = int(order[0])
        score = float(prediction.scores[cand])
        return cand, score, float(self.thresholds_[cand]), bool(score < self.thresholds_[cand])

    # ------------------------------------------------------------------ persistence
    def _to_contents(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
        card = {
            "params": {"alpha": self.alpha, "calibration_n": self.calibration_n,
                       "settings": self.settings, "generators": self.generators,
                       "use_stored": self.use_stored, "complexity": self.complexity,
                       "pvalue": self.pvalue, "batch_size": self.batch_size},
            "generator_specs": {v.name: v.generator.spec for v in self.verifiers_},
            "calibrations": {v.name: v.calibration.to_json() for v in self.verifiers_},
            "backbone": {
                "name": "generator-inversion",
                "preprocessing": {
                    "input": "uint8 RGB; centre crop to each generator's resolution, never "
                             "resized; smaller images refused",
                    "feature": "lowest reconstruction loss over restarts and Adam steps, "
                               "log and divided by 2-D entropy when complexity is on",
                },
            },
            "score": "p-value of 'this generator made it' (one-sided; higher = more likely)",
        }
        return card, {}, {}

    @classmethod
    def _from_contents(cls, contents: ModelContents) -> InvertAttributor:
        from genprint.verify.calibration import Calibration, CalibrationError
        from genprint.verify.generators import GeneratorSpecError, resolve_one
        from genprint.verify.verifier import Verifier

        card = contents.card
        model = cls(**card.get("params", {}))
        verifiers = []
        for name in card["classes"]:
            try:
                handle = resolve_one(card["generator_specs"][name])
                handle.name = name
                cal = Calibration.from_json(card["calibrations"][name], f"calibration of {name}")
                cal.check(handle)
            except (KeyError, GeneratorSpecError, CalibrationError) as exc:
                raise ModelFormatError(f"invert model: generator {name!r} cannot be restored: "
                                       f"{exc} (an invert model is rebuilt with `genprint "
                                       "train invert`)") from None
            verifiers.append(Verifier(handle, cal, model.batch_size))
        model.verifiers_ = verifiers
        model.classes_ = list(card["classes"])
        model.thresholds_ = np.asarray(card["thresholds"], dtype=np.float64)
        model.training_info_ = dict(card.get("training", {}))
        return model
