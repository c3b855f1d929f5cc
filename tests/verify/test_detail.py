"""The detail adjustment of calibration: log-loss minus a line in log detail, fitted on members."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genprint.verify.calibration import (
    Calibration,
    CalibrationError,
    calibrate,
    calibrated_scores,
    fit_detail,
)
from genprint.verify.complexity import log_detail
from genprint.verify.generators import GeneratorHandle
from genprint.verify.verifier import Verifier, verify_arrays
from tests.verify.test_calibration import FAST


def test_log_detail_grows_with_high_frequencies() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((1, 16, 16, 3), 128, np.uint8)
    ramp = (np.linspace(0, 1, 16) ** 2 * 255)[None, None, :, None]  # a curved ramp
    smooth = np.broadcast_to(ramp, (1, 16, 16, 3)).round().astype(np.uint8)
    noisy = rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    d = log_detail(np.concatenate([flat, smooth, noisy]))
    assert d[0] == pytest.approx(np.log(1e-12)) and d[0] < d[1] < d[2]
    assert log_detail(noisy[0]).shape == (1,)
    with pytest.raises(ValueError, match="N×H×W×3"):
        log_detail(np.zeros((2, 2, 2, 3)))


def test_fit_detail_gives_leave_one_out_residuals() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = 0.5 * x - 3 + rng.normal(0, 0.1, 40)
    (a, b), loo = fit_detail(y, x)
    assert b == pytest.approx(0.5, abs=0.05) and a == pytest.approx(-3, abs=0.05)
    for i in (0, 17, 39):  # the closed form equals refitting without the sample
        keep = np.arange(40) != i
        slope, intercept = np.polyfit(x[keep], y[keep], 1)
        assert loo[i] == pytest.approx(y[i] - (intercept + slope * x[i]))
    (a0, b0), _ = fit_detail(y, np.ones(40))  # no spread in detail: no slope
    assert b0 == 0.0 and a0 == pytest.approx(y.mean())
    with pytest.raises(ValueError, match="at least 3"):
        fit_detail(y[:2], x[:2])


def test_detail_calibration_is_stored_and_used_by_verify(tiny_gan: GeneratorHandle,
                                                         tmp_path: Path) -> None:
    cal = calibrate(tiny_gan, n=30, settings=FAST, detail=True)
    assert cal.detail is not None and "log detail" in cal.statistic
    images = tiny_gan.sample(30, cal.seed)
    plain = np.log(cal.losses)
    line, loo = fit_detail(plain, log_detail(images))
    np.testing.assert_allclose(cal.scores, loo)  # calibration scores are leave-one-out
    assert cal.detail == pytest.approx(line)
    path = cal.save(tmp_path / "d.json")
    d = Calibration.load(path).to_json()
    assert d["calibration_version"] == 3 and d["detail"]["slope"] == pytest.approx(line[1])
    loaded = Calibration.load(path)
    fresh = tiny_gan.sample(4, 777)
    rows = verify_arrays([Verifier(tiny_gan, loaded)], list(fresh))
    expected = calibrated_scores(np.array([r.loss for r in rows]), fresh, False, detail=line)
    np.testing.assert_allclose([r.calibrated_score for r in rows], expected)
    bad = {**d, "detail": {"intercept": float("nan"), "slope": 1.0}}
    with pytest.raises(CalibrationError, match="not finite"):
        Calibration.from_json(bad)
    with pytest.raises(CalibrationError, match="newer"):
        Calibration.from_json({**d, "calibration_version": 4})


def test_detail_is_on_by_default_only_under_a_condition(tiny_gan: GeneratorHandle) -> None:
    from genprint.verify.calibration import detail_by_default
    from genprint.verify.inversion import DIFFUSION_SETTINGS

    assert calibrate(tiny_gan, n=5, settings=FAST).detail is None
    assert calibrate(tiny_gan, n=5, settings=FAST, condition="jpeg75").detail is not None
    assert calibrate(tiny_gan, n=5, settings=FAST, condition="jpeg75", detail=False).detail is None
    assert calibrate(tiny_gan, n=5, settings=FAST, detail=True).detail is not None
    assert not detail_by_default("jpeg75", DIFFUSION_SETTINGS)  # stage noise: not measured
