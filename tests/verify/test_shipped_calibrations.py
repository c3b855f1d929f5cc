"""Every calibration shipped with the zoo loads, fits its generator and names its condition."""

from __future__ import annotations

import pytest

from genprint.verify.calibration import Calibration, condition_path
from genprint.verify.generators import resolve_one
from genprint.world.zoo.store import package_weights_dir

SUFFIX = ".calibration.json"


def test_shipped_calibrations_fit_their_generators() -> None:
    paths = sorted(package_weights_dir().glob(f"*{SUFFIX}"))
    if not paths:
        pytest.skip("no shipped calibrations in this checkout")
    for path in paths:
        name, *rest = path.name[: -len(SUFFIX)].split(".")
        condition = rest[0] if rest else None
        cal = Calibration.load(path)
        handle = resolve_one(f"zoo:{name}")
        cal.check(handle, condition=condition)  # same weights, resolution and condition
        assert cal.condition == condition and cal.n >= 200, path.name
        assert handle.calibration_path is not None
        assert condition_path(handle.calibration_path, condition) == path
        # made with the defaults: the detail adjustment under a condition, none on clean images
        assert (cal.detail is not None) == (condition is not None), path.name
        if cal.settings.stage == "noise":  # scored against the members' model, not flatness
            assert cal.noise_model is not None and cal.noise_model.n >= 200, path.name
            assert cal.noise_model.seed != cal.seed
