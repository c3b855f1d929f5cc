import numpy as np
import pytest

from genprint.world import cameras


def test_at_least_eight_cameras_and_two_held_out():
    assert len(cameras.CAMERAS) >= 8
    held = cameras.camera_names(held_out=True)
    assert len(held) >= 2
    assert not set(held) & set(cameras.camera_names(held_out=False))
    algos = {c.demosaic for c in cameras.CAMERAS}
    assert algos == {"bilinear", "malvar2004", "menon2007"}


def test_camera_images_are_deterministic_and_balanced():
    a, names_a = cameras.camera_images(16, 32, seed=1)
    b, names_b = cameras.camera_images(16, 32, seed=1)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and names_a == names_b
    counts = {n: names_a.count(n) for n in set(names_a)}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert set(names_a) <= set(cameras.camera_names(held_out=False))


def test_held_out_cameras_only_when_asked():
    _, names = cameras.camera_images(8, 32, seed=2, held_out=True)
    assert set(names) <= set(cameras.camera_names(held_out=True))


def test_prnu_differs_between_devices_and_is_fixed_per_device():
    p0 = cameras.prnu_pattern("cam-01", 0, 40, 40)
    assert np.array_equal(p0, cameras.prnu_pattern("cam-01", 0, 40, 40))
    p1 = cameras.prnu_pattern("cam-01", 1, 40, 40)
    assert abs(np.corrcoef(p0.ravel(), p1.ravel())[0, 1]) < 0.1


def test_pipeline_leaves_a_device_fingerprint():
    # Same flat grey scene through two devices: the PRNU correlates with its own device's pattern.
    scene = np.full((4, 40, 40, 3), 0.4, np.float32)
    cam = "cam-04"  # lossless output, strong PRNU
    out = cameras.capture(scene, cam, np.array([0, 0, 1, 1]), seed=0).astype(np.float32)
    resid = (out - out.mean(axis=(1, 2), keepdims=True)).mean(axis=3)
    m = cameras.MARGIN
    k0 = cameras.prnu_pattern(cam, 0, 40, 40)[m:-m, m:-m]
    same = np.corrcoef(resid[0].ravel(), k0.ravel())[0, 1]
    other = np.corrcoef(resid[2].ravel(), k0.ravel())[0, 1]
    assert same > other + 0.05


def test_bad_arguments_are_refused():
    with pytest.raises(KeyError, match="known"):
        cameras.camera_images(2, 32, 0, cameras=["nikon"])
    with pytest.raises(ValueError, match="even"):
        cameras.camera_images(2, 31, 0)


def test_camera_card_documents_the_pipeline():
    card = cameras.camera_card("cam-02")
    for key in ("cfa", "demosaic", "prnu", "shot_gain", "read_sigma", "gamma", "jpeg_quality"):
        assert key in card


def test_random_cameras_stay_within_the_training_cameras_ranges():
    train = [c for c in cameras.CAMERAS if not c.held_out]
    names = cameras.random_camera_names(40)
    assert names[0] == "rcam-001" and len(set(names)) == 40
    drawn = [cameras.get_camera(n) for n in names]
    assert drawn[0] == cameras.get_camera("rcam-001")  # deterministic for the name
    for field in ("crosstalk", "saturation", "gamma", "contrast", "shot_gain", "read_sigma", "prnu"):
        lo = min(getattr(c, field) for c in train)
        hi = max(getattr(c, field) for c in train)
        assert all(lo <= getattr(d, field) <= hi for d in drawn), field
    for field in ("cfa", "demosaic", "bits"):
        assert {getattr(d, field) for d in drawn} <= {getattr(c, field) for c in train}
    assert any(d.jpeg_quality is None for d in drawn) and any(d.jpeg_quality for d in drawn)
    assert not any(d.held_out for d in drawn)
    assert len({(d.cfa, d.demosaic, round(d.gamma, 6)) for d in drawn}) > 30  # really different


def test_random_cameras_take_pictures_and_bad_names_are_refused():
    imgs, names = cameras.camera_images(4, 32, seed=0, cameras=["rcam-007", "rcam-012"])
    assert imgs.shape == (4, 32, 32, 3) and set(names) == {"rcam-007", "rcam-012"}
    for bad in ("rcam-000", "rcam-1", "rcam-abc", "rcam-0001"):
        with pytest.raises(KeyError, match="rcam-001"):
            cameras.get_camera(bad)
    for n in (-1, 1000):
        with pytest.raises(ValueError, match="0 to 999"):
            cameras.random_camera_names(n)
    assert cameras.random_camera_names(999)[-1] == "rcam-999"
