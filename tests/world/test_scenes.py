import numpy as np

from genprint.world import scenes


def test_scenes_are_deterministic_and_in_range():
    a = scenes.render_scenes(6, 24, seed=3)
    b = scenes.render_scenes(6, 24, seed=3)
    c = scenes.render_scenes(6, 24, seed=4)
    assert a.shape == (6, 24, 24, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_photographs_are_downsampled_at_least_4x():
    assert min(scenes.PHOTO_FACTORS) >= 4
    raw = scenes._bundled_photographs()
    pool = scenes.photo_pool()
    assert len(pool) == len(raw) * len(scenes.PHOTO_FACTORS)
    for photo, small in zip(raw, pool[:: len(scenes.PHOTO_FACTORS)], strict=True):
        assert small.shape[0] <= photo.shape[0] // 4


def test_dead_leaves_cover_the_canvas_with_flat_discs():
    img = scenes.dead_leaves(32, np.random.default_rng(0))
    assert img.shape == (32, 32, 3)
    # Occluding discs: many neighbouring pixels share (nearly) the same colour.
    same = np.abs(np.diff(img, axis=1)).max(axis=2) < 0.02
    assert same.mean() > 0.5
