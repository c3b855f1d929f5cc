"""The members' noise model of stage ``noise``: features, fit, storage, calibration and verify."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genprint.verify.calibration import Calibration, CalibrationError, calibrate
from genprint.verify.generators import GeneratorHandle
from genprint.verify.inversion import invert, noise_whiteness_score
from genprint.verify.noise_model import NoiseModel, noise_features, noise_model_seed
from genprint.verify.verifier import Verifier, verify_arrays
from tests.verify.test_inversion import _WhiteNoiseGenerator


class _ColouredNoiseGenerator(_WhiteNoiseGenerator):
    """decode = sigmoid of *smoothed* N(0, I) noise, encode = the exact inverse of the sigmoid:
    a member's recovered noise is consistently coloured, not white (as a real DDIM inversion
    leaves it: approximate)."""

    def decode(self, z: torch.Tensor, ddim_steps: int | None = None) -> torch.Tensor:
        return torch.sigmoid(2 * torch.nn.functional.avg_pool2d(z, 3, 1, 1, False))


def white(n: int, seed: int) -> torch.Tensor:
    return torch.randn((n, 3, 16, 16), generator=torch.Generator().manual_seed(seed))


def test_features_describe_spectrum_variance_and_channel_correlation() -> None:
    z = white(5, 0)
    f = noise_features(z)
    assert f.shape == (5, 8 * 3 + 3 + 3) and np.isfinite(f).all()
    np.testing.assert_allclose(noise_features(2 * z)[:, :24], f[:, :24], atol=1e-9)  # shape
    np.testing.assert_allclose(noise_features(2 * z)[:, 24:27], f[:, 24:27] + np.log(4))
    same = z.clone()
    same[:, 1] = same[:, 0]
    assert np.allclose(noise_features(same)[:, 27], 1.0)  # channels 0 and 1 identical
    with pytest.raises(ValueError, match="spatial axes"):
        noise_features(torch.randn(4, 8))


def test_the_model_learns_what_members_look_like_even_when_that_is_not_white() -> None:
    """Members whose recovered noise is coloured: 1 − flatness calls white non-members more
    member-like than the members; the members' model does not."""
    coloured = torch.nn.functional.avg_pool2d(white(120, 1), 3, 1, 1, False)
    model = NoiseModel.fit(coloured[:100], seed=7)
    members, others = coloured[100:], white(20, 2)
    assert model.distance(members).max() < model.distance(others).min()
    assert noise_whiteness_score(members).min() > noise_whiteness_score(others).max()
    assert model.n == 100 and model.seed == 7


def test_json_round_trip_and_malformed_models() -> None:
    model = NoiseModel.fit(white(40, 3), seed=1)
    again = NoiseModel.from_json(model.to_json())
    z = white(6, 4)
    np.testing.assert_allclose(again.distance(z), model.distance(z))
    bad = model.to_json()
    bad["precision"] = bad["precision"][:-1]
    with pytest.raises(ValueError, match="do not match"):
        NoiseModel.from_json(bad)
    with pytest.raises(ValueError, match="unknown noise features"):
        NoiseModel.from_json({**model.to_json(), "features": "something-else"})
    with pytest.raises(ValueError, match="features"):
        model.distance(torch.randn(2, 1, 16, 16))  # another latent shape


def test_calibration_fits_the_model_on_other_samples_and_verify_uses_it(tmp_path: Path) -> None:
    gen = GeneratorHandle("coloured", _ColouredNoiseGenerator(), "<toy>")
    cal = calibrate(gen, n=40, model_n=60, seed=5)
    assert cal.noise_model is not None and cal.noise_model.n == 60
    assert cal.noise_model.seed == noise_model_seed("coloured", 5) != 5
    # the calibration losses are distances from the model, of samples it was not fitted on
    members = gen.sample(40, 5)
    np.testing.assert_allclose(cal.losses, cal.noise_model.distance(invert(gen, members).latents))
    assert "noise model" in cal.statistic
    path = cal.save(tmp_path / "c.json")
    loaded = Calibration.load(path)
    assert loaded.noise_model is not None
    fresh = gen.sample(10, 99)
    white_images = (torch.sigmoid(white(10, 6).repeat(1, 1, 2, 2)).permute(0, 2, 3, 1).numpy()
                    * 255).round().astype(np.uint8)
    rows = verify_arrays([Verifier(gen, loaded)], [*fresh, *white_images], alpha=0.05)
    assert np.mean([r.belongs for r in rows[:10]]) >= 0.8
    assert not any(r.belongs for r in rows[10:])
    # scores with the model and without it differ: the verifier must pass it on
    assert rows[0].loss == pytest.approx(float(loaded.noise_model.distance(
        invert(gen, fresh[:1]).latents)[0]))


def test_a_newer_calibration_format_is_refused(tmp_path: Path) -> None:
    gen = GeneratorHandle("coloured", _ColouredNoiseGenerator(), "<toy>")
    d = calibrate(gen, n=5, model_n=10).to_json()
    d["calibration_version"] = 99
    with pytest.raises(CalibrationError, match="newer"):
        Calibration.from_json(d)
    d["calibration_version"] = 2
    d["noise_model"]["mean"] = [1.0, 2.0]
    with pytest.raises(CalibrationError, match="not a valid calibration"):
        Calibration.from_json(d)


def test_the_distance_weighs_features_by_the_members_spread() -> None:
    """Noise whose channels are each white but correlated with each other moves one feature by a
    few of the members' standard deviations: the Mahalanobis distance sees it, a plain
    Euclidean distance of the features would not."""
    model = NoiseModel.fit(white(300, 8), seed=0)
    z = white(20, 9)
    mixed = z.clone()
    mixed[:, 1] = 0.6 * z[:, 1] + 0.8 * z[:, 0]  # corr(ch0, ch1) ≈ 0.8, each channel still white
    assert model.distance(mixed).min() > model.distance(z).max()
    euclid = np.linalg.norm(noise_features(mixed) - model.mean, axis=1)
    assert euclid.min() < np.linalg.norm(noise_features(z) - model.mean, axis=1).max()


def test_the_model_is_fitted_under_the_calibration_condition() -> None:
    from genprint.verify.calibration import apply_condition

    gen = GeneratorHandle("coloured", _ColouredNoiseGenerator(), "<toy>")
    cal = calibrate(gen, n=5, model_n=30, seed=3, condition="jpeg75")
    seed = noise_model_seed("coloured", 3)
    fit = apply_condition(gen.sample(30, seed), "jpeg75", seed)
    np.testing.assert_allclose(cal.noise_model.mean,
                               NoiseModel.fit(invert(gen, fit).latents, seed).mean)
    clean = NoiseModel.fit(invert(gen, gen.sample(30, seed)).latents, seed)
    assert not np.allclose(cal.noise_model.mean, clean.mean)


def test_inconsistent_calibration_files_are_refused() -> None:
    gen = GeneratorHandle("coloured", _ColouredNoiseGenerator(), "<toy>")
    good = calibrate(gen, n=5, model_n=10).to_json()
    for change, match in [
        ({"noise_model": None}, "without its noise model"),  # scores are distances: never flatness
        ({"settings": {**good["settings"], "stage": "chain"}}, "only stage 'noise'"),
        ({"noise_model": [1, 2]}, "not a JSON object"),
        ({"noise_model": {**good["noise_model"],
                          "precision": (-np.eye(30)).tolist()}}, "positive definite"),
    ]:
        with pytest.raises(CalibrationError, match=match):
            Calibration.from_json({**good, **change})
    old = {**good, "calibration_version": 1}
    del old["noise_model"]  # a format-1 file: scored with 1 − flatness, as it was made
    assert Calibration.from_json(old).noise_model is None
    small = {**good, "noise_model": NoiseModel.fit(white(10, 1)[:, :1], seed=0).to_json()}
    with pytest.raises(CalibrationError, match="features"):
        Calibration.from_json(small).check(gen)
