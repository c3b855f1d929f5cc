"""Batched inversion: per-sample independence, seeding, schedules, early stopping, inits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genprint.verify.generators import GeneratorHandle
from genprint.verify.inversion import (
    DEFAULT_SETTINGS,
    DIFFUSION_SETTINGS,
    REFERENCE,
    InversionSettings,
    default_settings,
    image_seed,
    invert,
    learning_rate,
    restart_seed,
)
from genprint.verify.losses import get_loss
from tests.verify.conftest import tiny

FAST = InversionSettings(steps=40, restarts=3, lr=0.05, check_every=10, prune_at=20,
                         keep_restarts=2, min_improvement=0.02, early_stop_from=0)


def _mixed(gen: GeneratorHandle, n_members: int = 3, n_random: int = 3) -> np.ndarray:
    members = gen.sample(n_members, seed=11)
    rand = np.random.default_rng(5).integers(0, 256, (n_random, 32, 32, 3), dtype=np.uint8)
    return np.concatenate([members, rand])


def test_batched_equals_one_at_a_time(tiny_gan: GeneratorHandle) -> None:
    images = _mixed(tiny_gan)
    seeds = [100 + i for i in range(len(images))]
    together = invert(tiny_gan, images, FAST, seeds=seeds)
    alone = [invert(tiny_gan, images[i : i + 1], FAST, seeds=[seeds[i]]) for i in range(6)]
    np.testing.assert_allclose(together.loss, [a.loss[0] for a in alone], rtol=1e-4)
    np.testing.assert_array_equal(together.steps_run, np.concatenate([a.steps_run for a in alone]))
    # Groups smaller than the batch (batch_size splits images) give the same losses too.
    split = invert(tiny_gan, images, FAST.with_(batch_size=4), seeds=seeds)
    np.testing.assert_allclose(split.loss, together.loss, rtol=1e-4)


def test_default_seeds_come_from_pixels(tiny_gan: GeneratorHandle) -> None:
    images = _mixed(tiny_gan, 2, 2)
    a = invert(tiny_gan, images, FAST)
    b = invert(tiny_gan, images[::-1].copy(), FAST)
    np.testing.assert_allclose(a.loss, b.loss[::-1], rtol=1e-4)
    assert image_seed(images[0]) != image_seed(images[1])
    assert restart_seed(1, 0) != restart_seed(1, 1) != restart_seed(2, 1)


def test_members_reconstruct_better_than_random(tiny_gan: GeneratorHandle) -> None:
    images = _mixed(tiny_gan, 4, 4)
    res = invert(tiny_gan, images, FAST)
    assert res.loss[:4].max() < res.loss[4:].min()
    assert res.restart_losses.shape == (8, 3) and res.latents.shape == (8, 8)
    np.testing.assert_allclose(res.loss, res.restart_losses.min(axis=1))
    # the stored best latent reproduces the best loss
    with torch.no_grad():
        rec = tiny_gan.decode(res.latents)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_allclose(get_loss("mse")(rec, x).numpy(), res.loss, rtol=1e-4)


def test_early_stopping_and_pruning_save_steps(tiny_gan: GeneratorHandle) -> None:
    images = _mixed(tiny_gan, 2, 2)
    full = invert(tiny_gan, images, FAST.with_(early_stop=False, prune_at=0))
    assert (full.steps_run == FAST.steps).all()
    pruned = invert(tiny_gan, images, FAST.with_(early_stop=False))
    assert ((pruned.steps_run == 20).sum(axis=1) == 1).all()  # one of 3 restarts pruned at 20
    two_stage = invert(tiny_gan, images, FAST.with_(early_stop=False, keep_one_at=30))
    for row in two_stage.steps_run:  # 3 starts → 2 at step 20 → 1 at step 30
        assert sorted(row) == [20, 30, 40]
    # rows are independent, so a pruned run is a prefix of the full run: never a lower loss
    assert (two_stage.loss >= full.loss - 1e-9).all()
    with pytest.raises(ValueError, match="keep_one_at"):
        InversionSettings(prune_at=50, keep_one_at=20)
    stopped = invert(tiny_gan, images, FAST.with_(min_improvement=0.5, prune_at=0))
    assert stopped.sample_steps < full.sample_steps
    # No row is retired by early stopping before early_stop_from (pruning still happens at 20).
    late = invert(tiny_gan, images, FAST.with_(min_improvement=0.5, early_stop_from=30))
    assert late.steps_run.min() >= 20 and (late.steps_run[late.steps_run != 20] >= 30).all()
    assert stopped.steps_run.max() <= 20 and late.sample_steps > stopped.sample_steps
    with pytest.raises(ValueError, match="early_stop_from"):
        InversionSettings(early_stop_from=-1)
    reference = invert(tiny_gan, images[:1], REFERENCE.with_(steps=30))
    assert (reference.steps_run == 30).all() and reference.steps_run.shape == (1, 8)


def test_schedules() -> None:
    s = InversionSettings(steps=101, lr=0.1)
    assert learning_rate(s, 0) == pytest.approx(0.1)
    assert learning_rate(s, 100) == pytest.approx(0.005)
    assert learning_rate(s.with_(schedule="step"), 60) == pytest.approx(0.03)
    assert learning_rate(s.with_(schedule="constant"), 100) == 0.1
    with pytest.raises(ValueError, match="schedule"):
        InversionSettings(schedule="linear")
    with pytest.raises(ValueError, match="loss"):
        InversionSettings(loss="lpips")


def test_losses_are_per_sample() -> None:
    x = torch.rand(3, 3, 16, 16)
    y = x.clone()
    y[1] = torch.rand(3, 16, 16)
    for name in ("mse", "l1", "ssim"):
        v = get_loss(name)(x, y)
        assert v.shape == (3,) and v[0] == pytest.approx(0, abs=1e-6) and v[1] > 0.01


def test_encoder_init_and_diffusion_chain() -> None:
    vae = tiny("vae-tconv-s0")
    images = vae.sample(2, seed=3)
    s = FAST.with_(init="encoder", restarts=2, prune_at=0, steps=10)
    res = invert(vae, images, s)
    assert np.isfinite(res.loss).all()
    with pytest.raises(ValueError, match="no encoder"):
        invert(tiny(), images, s)
    ddim = tiny("ddim-pixel-s0", width=8)
    assert ddim.is_diffusion and ddim.latent_shape == (3, 32, 32)
    assert default_settings(ddim) is DIFFUSION_SETTINGS and default_settings(vae) is DEFAULT_SETTINGS
    members = ddim.sample(1, seed=1, ddim_steps=2)
    s = InversionSettings(steps=5, restarts=1, ddim_steps=2, check_every=5)
    res = invert(ddim, members, s)
    assert res.steps_run.max() <= 5 and np.isfinite(res.loss).all()


def test_latent_diffusion_decoder_stage() -> None:
    from genprint.verify.generators import decoder_stage

    ldm = tiny("ldm-tconv-s0")
    stage = decoder_stage(ldm)
    assert stage.latent_shape == (8,) and stage.has_encoder
    np.testing.assert_array_equal(stage.sample(3, seed=4), ldm.sample(3, seed=4))
    s = FAST.with_(stage="decoder", steps=10, prune_at=0)
    res = invert(ldm, ldm.sample(2, seed=4), s)
    assert res.latents.shape == (2, 8) and np.isfinite(res.loss).all()
    with pytest.raises(ValueError, match="no decoder stage"):
        invert(tiny(), ldm.sample(1, seed=4), s)


class _WhiteNoiseGenerator:
    """A toy diffusion-like generator: decode = elementwise sigmoid of N(0, I) noise, encode =
    its exact inverse, so a member's recovered noise is white."""

    family = "ddim"
    is_diffusion = True
    has_encoder = True
    latent_shape = (3, 32, 32)

    def parameters(self) -> list[torch.nn.Parameter]:
        return []

    def sample_latent(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn((n, *self.latent_shape), generator=torch.Generator().manual_seed(seed))

    def decode(self, z: torch.Tensor, ddim_steps: int | None = None) -> torch.Tensor:
        return torch.sigmoid(z)

    def encode(self, x: torch.Tensor, ddim_steps: int | None = None) -> torch.Tensor:
        return torch.logit(x.clamp(0.5 / 255, 1 - 0.5 / 255))


def test_noise_stage_scores_the_whiteness_of_the_recovered_noise() -> None:
    from genprint.verify.inversion import noise_whiteness_score

    gen = GeneratorHandle("white", _WhiteNoiseGenerator(), "<toy>")
    assert default_settings(gen) is DIFFUSION_SETTINGS and DIFFUSION_SETTINGS.stage == "noise"
    members = gen.sample(8, seed=3)
    ramp = np.linspace(40, 215, 32)
    smooth = np.stack([np.clip(ramp[None, :, None] + ramp[:, None, None] * 0.3 * k
                               + np.random.default_rng(k).normal(0, 8, (32, 32, 3)), 0, 255)
                       for k in range(8)]).astype(np.uint8)
    res = invert(gen, np.concatenate([members, smooth]))
    assert res.steps_run.sum() == 0 and res.latents.shape == (16, 3, 32, 32)
    assert res.loss[:8].max() < res.loss[8:].min()  # white noise scores lower than structure
    # the score itself: white noise ≈ 1 − e^(−γ) ≈ 0.44 in expectation; smooth noise higher
    white = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = torch.nn.functional.avg_pool2d(white, 3, 1, 1)
    assert noise_whiteness_score(white).max() < 0.5 < noise_whiteness_score(blurred).min()
    with pytest.raises(ValueError, match="spatial axes"):
        noise_whiteness_score(torch.randn(4, 8))
    with pytest.raises(ValueError, match="no encoder"):
        invert(tiny(), members, DIFFUSION_SETTINGS)
