"""Calibration: belonging distribution, p-values, storage, refusing mismatched settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genprint.verify.calibration import (
    Calibration,
    CalibrationError,
    apply_condition,
    calibrate,
    calibration_seed,
    condition_path,
)
from genprint.verify.complexity import entropy_2d
from genprint.verify.generators import GeneratorHandle
from genprint.verify.inversion import InversionSettings
from genprint.verify.verifier import Verifier, fit_to_resolution, verify_arrays

FAST = InversionSettings(steps=30, restarts=2, check_every=10, prune_at=10, keep_restarts=1)


@pytest.fixture
def calibration(tiny_gan: GeneratorHandle) -> Calibration:
    return calibrate(tiny_gan, n=30, settings=FAST)


def test_calibration_roundtrip(calibration: Calibration, tiny_gan: GeneratorHandle,
                               tmp_path: Path) -> None:
    assert calibration.n == 30 and np.isfinite(calibration.scores).all()
    assert calibration.seed == calibration_seed(tiny_gan.name) and not calibration.complexity
    np.testing.assert_allclose(calibration.scores, np.log(calibration.losses))
    with_c = calibrate(tiny_gan, n=3, settings=FAST, complexity=True)
    assert with_c.complexity and not np.allclose(with_c.scores, np.log(with_c.losses))
    path = calibration.save(tmp_path / "sub" / "g.calibration.json")
    assert not list(path.parent.glob(".*tmp*"))  # written atomically, nothing left behind
    again = Calibration.load(path)
    np.testing.assert_array_equal(again.scores, calibration.scores)
    assert again.settings == calibration.settings and again.resolution == 32
    assert json.loads(path.read_text())["settings"]["steps"] == 30
    again.check(tiny_gan, FAST.with_(batch_size=7))  # batch size does not matter
    with pytest.raises(CalibrationError, match="steps=31"):
        again.check(tiny_gan, FAST.with_(steps=31))
    tiny_gan.sha256, again.sha256 = "a" * 64, "b" * 64
    with pytest.raises(CalibrationError, match="other weights"):
        again.check(tiny_gan)


def test_bad_calibration_files(tmp_path: Path, calibration: Calibration) -> None:
    with pytest.raises(CalibrationError, match="no calibration"):
        Calibration.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.load(tmp_path / "bad.json")
    newer = {**calibration.to_json(), "calibration_version": 99}
    (tmp_path / "new.json").write_text(json.dumps(newer))
    with pytest.raises(CalibrationError, match="newer"):
        Calibration.load(tmp_path / "new.json")
    for scores in ([0.1, float("nan"), 0.3], [0.1, float("inf")], [0.1]):
        (tmp_path / "nan.json").write_text(json.dumps({**calibration.to_json(),
                                                       "scores": scores}))
        with pytest.raises(CalibrationError, match="at least 2 finite numbers"):
            Calibration.load(tmp_path / "nan.json")


def test_a_calibration_whose_members_give_no_finite_loss_is_refused(
        tiny_gan: GeneratorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    import genprint.verify.calibration as calibration_module

    real_invert = calibration_module.invert

    def invert_with_a_nan(*args: Any, **kwargs: Any) -> Any:
        result = real_invert(*args, **kwargs)
        result.loss[1] = np.nan
        return result

    monkeypatch.setattr(calibration_module, "invert", invert_with_a_nan)
    with pytest.raises(CalibrationError, match="1 of its 4 own samples gave a loss that is not"):
        calibrate(tiny_gan, n=4, settings=FAST)


def test_p_values() -> None:
    cal = Calibration("g", "s", FAST, scores=np.arange(9.0), losses=np.ones(9))
    # ecdf with +1: p = (1 + #{scores >= s}) / (n + 1)
    np.testing.assert_allclose(cal.p_values([-1.0, 4.0, 8.5, 100.0]), [1.0, 0.6, 0.1, 0.1])
    p = cal.p_values([cal.mean, cal.mean + 10 * cal.std], "normal")
    assert p[0] == pytest.approx(0.5) and p[1] < 1e-6
    with pytest.raises(ValueError, match="p-value"):
        cal.p_values([0.0], "bootstrap")
    # a score that is not a number (a failed inversion) is no evidence of membership: the
    # floor under ecdf, 0 under normal, and z = +inf, so it never wins a tie-break
    assert cal.p_values([np.nan])[0] == pytest.approx(0.1)
    assert cal.p_values([np.nan], "normal")[0] == 0.0
    assert cal.z_scores([np.nan, cal.mean])[0] == np.inf


def test_complexity() -> None:
    flat = np.full((32, 32, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert entropy_2d(flat) == 0.0
    assert 9.0 < entropy_2d(noise) <= 10.0  # at most log2(32·32) bits
    assert entropy_2d(noise, levels=16) < entropy_2d(noise)


def test_verify_members_against_random(tiny_gan: GeneratorHandle,
                                       calibration: Calibration) -> None:
    members = tiny_gan.sample(4, seed=999)
    rand = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    big = np.zeros((40, 36, 3), np.uint8)
    big[4:36, 2:34] = members[0]
    small = members[0][:20]
    rows = verify_arrays([Verifier(tiny_gan, calibration)],
                         [*members, *rand, big, small], alpha=0.05)
    # random images get the smallest possible p-value, 1 / (n + 1); members are accepted at the
    # rate the test promises (about 1 − α; deterministic here, so no flakiness)
    assert all(r.p_value == pytest.approx(1 / 31) and not r.belongs for r in rows[4:6])
    assert sum(r.belongs for r in rows[:4]) >= 3
    assert min(r.loss for r in rows[:4]) < 0.01 * min(r.loss for r in rows[4:6])
    assert rows[4].label == "unknown" and rows[0].label == tiny_gan.name
    assert rows[6].note and "centre-cropped from 36×40" in rows[6].note
    assert rows[6].loss == pytest.approx(rows[0].loss, rel=1e-4)
    assert rows[7].error_code == "too_small" and rows[7].loss is None
    with pytest.raises(ValueError, match="smaller"):
        fit_to_resolution(small, 32)
    flat = [np.full((32, 32, 3), v, np.uint8) for v in (0, 128, 255)]
    flat += [np.broadcast_to(np.array(c, np.uint8), (32, 32, 3)).copy()
             for c in ((255, 0, 0), (10, 200, 90))]  # solid colours, not only greys
    flat_rows = verify_arrays([Verifier(tiny_gan, calibration)], flat, alpha=0.05)
    assert all(r.error_code == "no_content" and not r.belongs and "uniform" in r.error
               for r in flat_rows)


def test_alpha_below_the_smallest_p_value_is_refused(tiny_gan: GeneratorHandle) -> None:
    small = calibrate(tiny_gan, n=5, settings=FAST)  # empirical p-values ≥ 1/6
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"1/\(N\+1\) = 0.167.*--n 20 or more"):
        verify_arrays([Verifier(tiny_gan, small)], [image], alpha=0.05)
    # a reachable alpha, or a parametric p-value, is fine
    assert len(verify_arrays([Verifier(tiny_gan, small)], [image], alpha=0.2)) == 1
    small.pvalue = "normal"
    assert len(verify_arrays([Verifier(tiny_gan, small)], [image], alpha=0.05)) == 1


def test_calibration_under_a_condition_keeps_processed_members_accepted(
        tiny_gan: GeneratorHandle, calibration: Calibration, tmp_path: Path) -> None:
    noisy_cal = calibrate(tiny_gan, n=30, settings=FAST, condition="noise")
    assert noisy_cal.condition == "noise" and calibration.condition is None
    # the samples went through the perturbation: σ = 2 levels of noise dominates the loss
    assert np.median(noisy_cal.losses) > 10 * np.median(calibration.losses)
    members = apply_condition(tiny_gan.sample(8, seed=999), "noise", seed=12345)
    clean_rows = verify_arrays([Verifier(tiny_gan, calibration)], list(members))
    noisy_rows = verify_arrays([Verifier(tiny_gan, noisy_cal)], list(members))
    # against the clean calibration every noised member is rejected at the smallest p-value;
    # against the calibration made under the same condition they are accepted as members are
    assert all(not r.belongs and r.p_value == pytest.approx(1 / 31) for r in clean_rows)
    assert sum(r.belongs for r in noisy_rows) >= 6
    # the condition is stored, named in the default path, and a mismatch is refused
    base = tmp_path / "g.calibration.json"
    assert condition_path(base, None) == base
    assert condition_path(base, "noise").name == "g.noise.calibration.json"
    tiny_gan.calibration_path = base
    calibration.save(base)
    noisy_cal.save(condition_path(base, "noise"))
    assert Verifier.load(tiny_gan, condition="noise").calibration.condition == "noise"
    assert Verifier.load(tiny_gan).calibration.condition is None
    with pytest.raises(CalibrationError, match="not calibrated for condition 'jpeg75'"):
        Verifier.load(tiny_gan, condition="jpeg75")
    with pytest.raises(CalibrationError, match="clean images, not for images under condition"):
        Verifier.load(tiny_gan, base, condition="noise")
    with pytest.raises(CalibrationError, match="'noise', not for clean images"):
        Calibration.load(condition_path(base, "noise")).check(tiny_gan)


def test_conditions_are_seeded_and_checked(tiny_gan: GeneratorHandle) -> None:
    images = tiny_gan.sample(3, seed=1)
    a, b = apply_condition(images, "noise", 0), apply_condition(images, "noise", 100)
    np.testing.assert_array_equal(a, apply_condition(images, "noise", 0))  # deterministic
    assert not np.array_equal(a[0], b[0]) and not np.array_equal(a[0] - images[0], a[1] - images[1])
    assert apply_condition(images, None) is images
    with pytest.raises(ValueError, match="unknown perturbation 'jpeg10'"):
        calibrate(tiny_gan, n=3, settings=FAST, condition="jpeg10")
    with pytest.raises(ValueError, match="changes the image size"):
        apply_condition(images, "crop")
