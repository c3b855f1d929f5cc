"""Robustness perturbations: determinism, documented effects, name expansion."""

from __future__ import annotations

import numpy as np
import pytest

from genprint.evaluation.perturb import (
    expand_perturbations,
    gaussian_blur,
    perturbation,
    perturbation_names,
)
from genprint.registry import RegistryError
from tests.conftest import textured

EXPECTED = ["jpeg95", "jpeg75", "jpeg50", "resize0.5", "blur0.5", "blur1", "crop", "noise"]


@pytest.fixture
def image() -> np.ndarray:
    return textured(np.random.default_rng(3), 64, 80, 3)


def _high_freq_energy(img: np.ndarray) -> float:
    x = img.astype(np.float64).mean(axis=2)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(x - x.mean()))) ** 2
    h, w = x.shape
    yy, xx = np.mgrid[:h, :w]
    far = np.hypot((yy - h / 2) / h, (xx - w / 2) / w) > 0.25
    return float(spec[far].sum())


def test_names_and_all_expansion() -> None:
    assert perturbation_names() == EXPECTED
    assert expand_perturbations(["all"]) == EXPECTED
    assert expand_perturbations(["noise", "all", "noise"]) == ["noise"] + EXPECTED[:-1]
    with pytest.raises(RegistryError, match="jpeg75"):
        expand_perturbations(["jpeg10"])


@pytest.mark.parametrize("name", EXPECTED)
def test_deterministic_per_seed_and_input_untouched(name: str, image: np.ndarray) -> None:
    before = image.copy()
    fn = perturbation(name, min_size=32)
    a, b = fn(image, 7), fn(image, 7)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(image, before)
    assert a.shape != image.shape or not np.array_equal(a, image)
    if name in ("crop", "noise"):  # the random ones depend on the seed
        others = [fn(image, s) for s in range(1, 6)]
        assert any(o.shape != a.shape or not np.array_equal(o, a) for o in others)


def test_jpeg_error_grows_as_quality_drops(image: np.ndarray) -> None:
    err = {q: np.abs(perturbation(f"jpeg{q}")(image, 0).astype(float) - image).mean()
           for q in (95, 75, 50)}
    assert 0 < err[95] < err[75] < err[50]


@pytest.mark.parametrize("name", ["blur0.5", "blur1", "resize0.5"])
def test_blur_and_resize_remove_high_frequencies(name: str, image: np.ndarray) -> None:
    out = perturbation(name)(image, 0)
    assert out.shape == image.shape
    assert _high_freq_energy(out) < 0.7 * _high_freq_energy(image)


def test_stronger_blur_removes_more(image: np.ndarray) -> None:
    e05 = _high_freq_energy(perturbation("blur0.5")(image, 0))
    e1 = _high_freq_energy(perturbation("blur1")(image, 0))
    assert e1 < e05


def test_gaussian_blur_preserves_flat_images_and_mean() -> None:
    flat = np.full((20, 24, 3), 123, np.uint8)
    np.testing.assert_array_equal(gaussian_blur(flat, 1.0), flat)
    img = np.zeros((21, 21, 3), np.uint8)
    img[10, 10] = 255
    out = gaussian_blur(img, 1.0).astype(float)
    assert out[10, 10, 0] == pytest.approx(255 / (2 * np.pi), abs=1.5)  # peak of a 2-D Gaussian


def test_crop_removes_ten_to_twenty_percent_of_each_side() -> None:
    img = textured(np.random.default_rng(0), 200, 300, 5)
    crop = perturbation("crop")
    for seed in range(40):
        h, w = crop(img, seed).shape[:2]
        assert 0.80 * 200 <= h <= 0.90 * 200 and 0.80 * 300 <= w <= 0.90 * 300
    # the crop really is a sub-window of the input
    out = crop(img, 3)
    windows = np.lib.stride_tricks.sliding_window_view(img, out.shape)
    assert (windows == out).all(axis=(-3, -2, -1)).any()


def test_crop_never_goes_below_min_size() -> None:
    img = textured(np.random.default_rng(0), 36, 40, 2)
    for seed in range(20):
        out = perturbation("crop", min_size=34)(img, seed)
        assert min(out.shape[:2]) >= 34
    small = textured(np.random.default_rng(0), 30, 30, 2)
    assert perturbation("crop", min_size=32)(small, 0).shape == small.shape  # left whole


def test_noise_std_is_two_levels() -> None:
    grey = np.full((256, 256, 3), 128, np.uint8)
    diff = perturbation("noise")(grey, 11).astype(float) - 128
    # rounding adds 1/12 to the variance
    assert np.sqrt(diff.var()) == pytest.approx(np.sqrt(4 + 1 / 12), rel=0.03)
    assert abs(diff.mean()) < 0.05


def test_refuses_wrong_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        perturbation("noise")(np.zeros((8, 8, 3), np.float32), 0)
