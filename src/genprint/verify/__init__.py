"""White-box verification by generator inversion (method ``invert``; DESIGN.md section 1.3).

>>> from genprint.verify import resolve, calibrate, Verifier, verify_arrays   # doctest: +SKIP
>>> [gen] = resolve("zoo:gan-tconv-s0")                                         # doctest: +SKIP
>>> cal = calibrate(gen, n=200); cal.save(gen.calibration_path)                # doctest: +SKIP
>>> rows = verify_arrays([Verifier(gen, cal)], images)                         # doctest: +SKIP

Modules: :mod:`~genprint.verify.inversion` (batched inversion), :mod:`~.calibration` (belonging
distribution, p-values), :mod:`~.complexity` (2-D entropy), :mod:`~.generators` (resolving
``zoo:NAME`` / ``package.module:factory`` specs), :mod:`~.verifier` (verifying and attributing
images), :mod:`~.losses` (per-sample MSE, L1, SSIM).
"""

from __future__ import annotations

from genprint.verify.calibration import Calibration, CalibrationError, calibrate
from genprint.verify.generators import GeneratorHandle, GeneratorSpecError, resolve, resolve_one
from genprint.verify.inversion import REFERENCE, InversionResult, InversionSettings, invert
from genprint.verify.verifier import Verifier, VerifyRow, verify_arrays, verify_files

__all__ = ["REFERENCE", "Calibration", "CalibrationError", "GeneratorHandle",
           "GeneratorSpecError", "InversionResult", "InversionSettings", "Verifier", "VerifyRow",
           "calibrate", "invert", "resolve", "resolve_one", "verify_arrays", "verify_files"]
