"""Batched generator inversion: find the latent whose decoding best reconstructs each image.

RONAN (Wang et al., NeurIPS 2023) minimises L(G(z), x) over z with Adam from several random
restarts and scores an image by the lowest loss reached; LatentTracer (ICML 2024) starts from the
generator's encoder instead where it has one. Here every image × restart pair is one row of a
single latent tensor, optimised together:

* **per-sample losses** — the optimised objective is the *sum* of per-row losses, so each row's
  gradient is its own, and Adam (written out here, with per-row state) normalises per element:
  a row's trajectory does not depend on which other rows share its batch;
* **seeding** — the random start of restart ``r`` of an image is ``sample_latent(1, s)`` with
  ``s = restart_seed(image_seed, r)``, and the image seed defaults to a hash of its pixels, so
  inverting an image alone or inside any batch starts (and ends) the same, up to the rounding
  of batched matrix products (relative ≈ 1e-6, up to 3e-4 measured);
* **schedule** — cosine (default), step decay or constant learning rate over ``steps``;
* **early stopping** — every ``check_every`` steps (the only host synchronisation) from step
  ``early_stop_from`` on, each row whose best loss improved by less than ``min_improvement``
  (relative) since the previous check is retired. Not earlier: while the learning rate is high a
  row can sit on a plateau for a while and still escape it, and retiring such rows of a
  generator's *own* images fills its calibration's tail with poor losses (measured on
  gan-bilinear-s0, see :data:`DEFAULT_SETTINGS`);
* **pruning** — at ``prune_at`` each image keeps only its ``keep_restarts`` best rows, and at
  ``keep_one_at`` only its best one. Retired rows leave the batch, so later steps cost less;
* **score** — the lowest loss over restarts and steps; the best latent is kept with it.

Diffusion generators are inverted through their deterministic DDIM chain of ``ddim_steps``
steps (default: the generator's own sampling length). The generator's parameters are frozen.

Pixel-space diffusion is the exception (stage ``noise``, its default): its first DDIM steps clip
almost every pixel, so reconstruction loss does not tell members from others (AUC ≈ 0.6).
Instead the image is mapped back to its starting noise by DDIM inversion and scored by how far
that noise is from what a member's looks like: a member started from a white N(0, I) draw, a
photograph or another generator's image leaves another spectrum in it. A calibration fits the
members' noise model (:mod:`genprint.verify.noise_model`) and the score is the distance from it;
without a model, the score is 1 − spectral flatness (:func:`noise_whiteness_score`).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from genprint.verify.generators import GeneratorHandle, decoder_stage
from genprint.verify.losses import INVERSION_LOSSES, get_loss
from genprint.verify.noise_model import NoiseModel

SCHEDULES = ("cosine", "step", "constant")
INITS = ("auto", "random", "encoder")
STAGES = ("chain", "decoder", "noise")


@dataclass(frozen=True)
class InversionSettings:
    """How images are inverted. Everything but ``batch_size`` changes the losses."""

    steps: int = 300
    restarts: int = 8
    lr: float = 0.2
    schedule: str = "cosine"
    loss: str = "mse"
    init: str = "auto"
    """``auto``: encoder where the generator has one, else random; ``random``; ``encoder``."""
    jitter: float = 0.1
    """Encoder init: restarts ≥ 1 start at the encoder's latent plus this × prior noise."""
    early_stop: bool = True
    early_stop_from: int = 150
    """First step at which early stopping may retire a row (half the default cosine schedule,
    where the learning rate has fallen to about half its start)."""
    check_every: int = 25
    min_improvement: float = 0.01
    """Relative improvement of a row's best loss between checks below which it stops."""
    prune_at: int = 50
    """Step at which each image keeps only its ``keep_restarts`` best rows (0: never)."""
    keep_restarts: int = 3
    keep_one_at: int = 100
    """Step at which each image keeps only its single best row (0: never; after ``prune_at``)."""
    ddim_steps: int | None = None
    """Length of the DDIM chain of diffusion generators (None: the generator's own)."""
    stage: str = "chain"
    """``chain``: invert the whole generator (diffusion: through its DDIM chain); ``decoder``:
    invert only the last stage of a latent-diffusion model, its autoencoder's decoder, over the
    chain's output latent (LatentTracer's approach for latent diffusion); ``noise``: no
    optimisation — map the image back to its starting noise with the generator's ``encode``
    (pixel diffusion: deterministic DDIM inversion) and score how far that noise is from the
    members' noise model of the calibration (:mod:`genprint.verify.noise_model`; without one,
    from white: :func:`noise_whiteness_score`), for generators whose latent is N(0, I) noise
    with spatial axes."""
    batch_size: int = 256
    """Rows (images × restarts) optimised at once; does not change the results."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.restarts < 1 or self.check_every < 1:
            raise ValueError("steps, restarts and check_every must be ≥ 1")
        if self.early_stop_from < 0:
            raise ValueError("early_stop_from must be ≥ 0")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.loss not in INVERSION_LOSSES:
            from genprint.plugins import PLUGIN_HINT

            raise ValueError(f"loss {self.loss!r} is not registered in this process; known: "
                             f"{', '.join(INVERSION_LOSSES)} ({PLUGIN_HINT})")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}")
        if self.keep_restarts < 1:
            raise ValueError("keep_restarts must be ≥ 1")
        if self.keep_one_at < 0 or (self.keep_one_at and self.keep_one_at < self.prune_at):
            raise ValueError("keep_one_at must be 0 (never) or ≥ prune_at")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the losses (stored with calibrations)."""
        d = asdict(self)
        d.pop("batch_size")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InversionSettings:
        """Settings from :meth:`fingerprint` output (unknown keys are an error)."""
        return cls(**d)

    def with_(self, **changes: Any) -> InversionSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)


DEFAULT_SETTINGS = InversionSettings()
"""genprint's default: 8 starts, the best 3 kept after 50 steps and the best one after 100, at most
300 cosine-scheduled Adam steps from lr 0.2, early stopping from step 150. Keeping 3 starts to
the end costs 940 decoder passes per image (16× faster than :data:`REFERENCE`, below the 20×
target); keeping one from step 100, 680 passes (21×; ``benchmarks/invert_speed.py``).

Chosen on the validation image sets of ``benchmarks/invert_auc.py --split val`` (other seeds than
the reported figures), for the two generators whose members most often stay stuck in a poor
local minimum (AUC; calibration N = 200, 100 members, 100 real, 20 per other generator):

=========================================  ===============  ==============
settings                                   gan-bilinear-s0  gan-nearest-s0
=========================================  ===============  ==============
keep 1 after 10, early stop from 25        (0.988 on test)  (0.971 on test)
keep 1 after 10, early stop from 150       0.974            0.995
keep 1 after 10, no early stop             0.975
keep 1 after 10, no early stop, 600 steps  0.997
keep 2 after 50, early stop from 150       0.988
keep 3 after 50, early stop from 150       0.998            0.998
keep 3 after 50, 1 after 100, e.s. 150     0.995            0.998
=========================================  ===============  =============="""

DIFFUSION_OPTIMISATION_SETTINGS = InversionSettings(steps=100, restarts=2, prune_at=10,
                                                    keep_restarts=1, keep_one_at=0)
"""Inversion by optimisation for pixel-space diffusion generators *without* an encoder, whose
every decode runs a U-Net chain (≈ 50× a GAN's cost): 2 starts, the better one kept after 10
steps, at most 100 steps. On the zoo's pixel diffusion it does not separate members (AUC ≈ 0.6).

Why, as measured (AUC of the raw loss, 8 members and 8 non-members per run; 16 and 19 for the
fixed-point starts): the first DDIM step divides by √ᾱ ≈ 0.003 and clips 95% of the pixels, so
each sample is set by the sign pattern of the noise model's residual at t = T−1, a
discontinuous function of z. Around a member's own z the loss stays small only within
≈ 0.01–0.03 per element, while DDIM inversion lands 0.7–0.8 (RMS) away. Tried: these settings
from the DDIM-inversion start (AUC 0.67); a straight-through or tanh-shaped gradient through the
clip (0.34–0.61); fixed-point (exact) DDIM inversion as the start (0.32–0.38); inverting only
the last k DDIM steps over the intermediate state (k = 2, 5: 0.33, 0.67; k = 8 at lr 0.05: 0.78;
k = 9: 0.86 at lr 0.2 but 0.38–0.70 at lr 0.02–0.05)."""

DIFFUSION_SETTINGS = InversionSettings(stage="noise", restarts=1)
"""Default for pixel-space diffusion generators with an encoder (the zoo's: DDIM inversion):
stage ``noise`` — the DDIM-inverted noise against the members' noise model that calibration
fits, no optimisation. Validation AUC 0.961 / 0.986 on ddim-pixel-s0 / -s1 (1 − flatness:
0.939 / 0.929; ``benchmarks/invert_noise_whiteness.py``)."""


LATENT_DIFFUSION_SETTINGS = DEFAULT_SETTINGS.with_(stage="decoder")
"""Default for latent diffusion: invert its autoencoder's decoder, starting from its encoder
(LatentTracer), with the default schedule."""


def default_settings(generator: Any) -> InversionSettings:
    """The default settings for a generator: :data:`LATENT_DIFFUSION_SETTINGS` for latent
    diffusion (zoo family ``ldm``); for other diffusion generators :data:`DIFFUSION_SETTINGS`
    where they have an encoder, else :data:`DIFFUSION_OPTIMISATION_SETTINGS`; else
    :data:`DEFAULT_SETTINGS`."""
    if getattr(generator, "family", None) == "ldm":
        return LATENT_DIFFUSION_SETTINGS
    if getattr(generator, "is_diffusion", False):
        latent = tuple(getattr(generator, "latent_shape", ()))
        if getattr(generator, "has_encoder", False) and len(latent) == 3:
            return DIFFUSION_SETTINGS
        return DIFFUSION_OPTIMISATION_SETTINGS
    return DEFAULT_SETTINGS

REFERENCE = InversionSettings(steps=2000, restarts=8, lr=0.01, schedule="constant", init="random",
                              early_stop=False, prune_at=0, keep_one_at=0)
"""The published schedule (one image at a time in the reference code): 8 random restarts, 2000
Adam steps at lr 0.01, no early stopping."""


@dataclass
class InversionResult:
    """Per-image outcome of :func:`invert`."""

    loss: np.ndarray
    """(N,) lowest loss over restarts and steps: the score (lower = more likely a member)."""
    restart_losses: np.ndarray
    """(N, R) lowest loss of each restart."""
    latents: torch.Tensor
    """(N, *latent_shape) the latent that reached :attr:`loss`."""
    steps_run: np.ndarray
    """(N, R) steps each restart was optimised before it stopped."""
    seconds: float = 0.0

    @property
    def sample_steps(self) -> int:
        """Total decoder forward+backward passes per sample (the compute spent)."""
        return int(self.steps_run.sum())


def image_seed(image: np.ndarray | torch.Tensor) -> int:
    """A seed from an image's pixels (uint8 quantised), so its inversion is reproducible."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    return zlib.crc32(np.ascontiguousarray(arr).tobytes()) & 0x7FFFFFFF


def restart_seed(seed: int, restart: int) -> int:
    """Seed of the random start of restart ``restart`` of the image seeded ``seed``."""
    return zlib.crc32(f"genprint-invert:{int(seed)}:{int(restart)}".encode()) & 0x7FFFFFFF


def learning_rate(settings: InversionSettings, step: int) -> float:
    """Learning rate at ``step`` (0-based) under the schedule."""
    if settings.schedule == "constant":
        return settings.lr
    frac = step / max(1, settings.steps - 1)
    if settings.schedule == "step":
        return settings.lr * (0.3 ** (int(frac >= 0.5) + int(frac >= 0.75)))
    floor = 0.05 * settings.lr
    return floor + (settings.lr - floor) * 0.5 * (1 + math.cos(math.pi * frac))


def to_tensor(images: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×3 (or a list of H×W×3) → float N×3×H×W in [0, 1]; tensors pass through."""
    if isinstance(images, torch.Tensor):
        return images.float()
    arr = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0


def noise_whiteness_score(z: torch.Tensor) -> torch.Tensor:
    """1 − spectral flatness of each latent (N×C×H×W), averaged over channels: 0 for perfectly
    flat (white) noise, towards 1 for structured content.

    Spectral flatness is the geometric over the arithmetic mean of the power spectrum
    ``|FFT2(z)|²`` over the spatial frequencies. Chosen on validation images only
    (``benchmarks/invert_noise_whiteness.py``) among spectral, patch-covariance, autocorrelation
    and moment statistics of the recovered noise.
    """
    if z.dim() != 4 or min(z.shape[-2:]) < 2:
        raise ValueError("the noise score needs latents with spatial axes (N×C×H×W); "
                         f"got shape {tuple(z.shape)}")
    power = torch.fft.fft2(z.double()).abs() ** 2 + 1e-12
    flat = torch.exp(torch.log(power).mean((2, 3))) / power.mean((2, 3))
    return (1.0 - flat.mean(1)).float()


def _invert_by_noise(gen: GeneratorHandle, x: torch.Tensor, settings: InversionSettings,
                     noise_model: NoiseModel | None = None,
                     on_progress: Callable[[int], None] | None = None) -> InversionResult:
    """Stage ``noise``: encode, then score the recovered noise (no optimisation): its distance
    from the members' ``noise_model`` when given (what calibrations use), else 1 − flatness."""
    if not gen.has_encoder:
        raise ValueError(f"generator {gen.name} has no encoder (stage='noise' maps images back "
                         "to their noise with encode)")
    t0 = time.perf_counter()
    scores, latents = [], []
    with torch.no_grad():
        for s in range(0, len(x), settings.batch_size):
            z = gen.encode(x[s : s + settings.batch_size].to(gen.device),
                           settings.ddim_steps).float().cpu()
            latents.append(z)
            scores.append(torch.from_numpy(noise_model.distance(z)) if noise_model is not None
                          else noise_whiteness_score(z))
            if on_progress is not None:
                on_progress(len(z))
    loss = torch.cat(scores).numpy().astype(np.float64) if scores else np.zeros(0)
    lat = torch.cat(latents) if latents else torch.zeros((0, *gen.latent_shape))
    return InversionResult(loss=loss, restart_losses=loss[:, None], latents=lat,
                           steps_run=np.zeros((len(x), 1), dtype=np.int64),
                           seconds=time.perf_counter() - t0)


def _initial_latents(gen: GeneratorHandle, x: torch.Tensor, seeds: Sequence[int],
                     settings: InversionSettings) -> torch.Tensor:
    r_count = settings.restarts
    noise = torch.stack([gen.sample_latent(1, restart_seed(s, r))[0].cpu()
                         for s in seeds for r in range(r_count)]).float().to(x.device)
    use_encoder = settings.init == "encoder" or (settings.init == "auto" and gen.has_encoder)
    if not use_encoder:
        return noise
    if not gen.has_encoder:
        raise ValueError(f"generator {gen.name} has no encoder (init='encoder')")
    with torch.no_grad():
        enc = gen.encode(x, settings.ddim_steps).float()
    z = enc.repeat_interleave(r_count, dim=0)
    restart = torch.arange(len(z), device=z.device) % r_count
    jit = (restart > 0).float().view(-1, *([1] * (z.dim() - 1))) * settings.jitter
    return z + jit * noise


def _invert_group(gen: GeneratorHandle, x: torch.Tensor, seeds: Sequence[int],
                  settings: InversionSettings) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Invert a group of images; returns per-row best losses, best latents and steps run."""
    loss_fn = get_loss(settings.loss)
    r_count = settings.restarts
    n_rows = len(seeds) * r_count
    dev = gen.device
    x = x.to(dev)
    z0 = _initial_latents(gen, x, seeds, settings)
    lat_dims = [1] * (z0.dim() - 1)
    img_of_row = torch.arange(n_rows, device=dev) // r_count
    # Outputs for every row (filled when a row retires).
    out_best = torch.full((n_rows,), float("inf"), device=dev)
    out_z = z0.clone()
    out_steps = np.zeros(n_rows, dtype=np.int64)
    # Working set.
    rows = torch.arange(n_rows, device=dev)
    z = z0.clone()
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    best = torch.full((n_rows,), float("inf"), device=dev)
    best_z = z0.clone()
    at_check = torch.full((n_rows,), float("inf"), device=dev)
    b1, b2, eps = 0.9, 0.999, 1e-8
    stages = _prune_stages(settings, r_count)
    stage_steps = {step for step, _ in stages}

    def retire(keep: torch.Tensor, step: int) -> None:
        nonlocal rows, z, m, v, best, best_z, at_check
        gone = ~keep
        idx = rows[gone]
        out_best[idx] = best[gone]
        out_z[idx] = best_z[gone]
        out_steps[idx.cpu().numpy()] = step
        rows, z, m, v = rows[keep], z[keep], m[keep], v[keep]
        best, best_z, at_check = best[keep], best_z[keep], at_check[keep]

    for t in range(settings.steps):
        if len(rows) == 0:
            break
        z.requires_grad_(True)
        per = loss_fn(gen.decode(z, settings.ddim_steps), x[img_of_row[rows]])
        (grad,) = torch.autograd.grad(per.sum(), z)
        with torch.no_grad():
            z = z.detach()
            per = per.detach()
            better = per < best
            best = torch.where(better, per, best)
            best_z = torch.where(better.view(-1, *lat_dims), z, best_z)
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            k = t + 1
            step_size = learning_rate(settings, t) / (1 - b1**k)
            z = z - step_size * m / ((v / (1 - b2**k)).sqrt() + eps)
        if k % settings.check_every and k != settings.steps and k not in stage_steps:
            continue
        keep = torch.ones(len(rows), dtype=torch.bool, device=dev)
        if settings.early_stop and k >= settings.early_stop_from:
            finite = torch.isfinite(at_check)
            rel = (at_check - best) / at_check.clamp(min=1e-30)
            keep &= ~finite | (rel >= settings.min_improvement)
            at_check = best.clone()
        while stages and k >= stages[0][0]:
            keep &= _top_rows(img_of_row[rows].cpu().numpy(), best.cpu().numpy(),
                              stages.pop(0)[1]).to(dev)
        if k == settings.steps:
            keep[:] = False
        if not bool(keep.all()):
            retire(keep, k)
    if len(rows):
        retire(torch.zeros(len(rows), dtype=torch.bool, device=dev), settings.steps)
    return out_best.cpu(), out_z.cpu(), out_steps


def _prune_stages(settings: InversionSettings, restarts: int) -> list[tuple[int, int]]:
    """(step, rows kept per image) of each pruning that removes rows, in step order."""
    stages = [(settings.prune_at, settings.keep_restarts), (settings.keep_one_at, 1)]
    return [(step, n) for step, n in stages if step > 0 and n < restarts]


def _top_rows(images: np.ndarray, best: np.ndarray, keep: int) -> torch.Tensor:
    """Mask of the ``keep`` rows with the lowest loss of each image (ties: lower row first)."""
    order = np.lexsort((np.arange(len(best)), best, images))
    mask = np.zeros(len(best), dtype=bool)
    rank = 0
    for pos, row in enumerate(order):
        rank = rank + 1 if pos and images[order[pos - 1]] == images[row] else 0
        mask[row] = rank < keep
    return torch.from_numpy(mask)


def invert(
    generator: GeneratorHandle | Any,
    images: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    settings: InversionSettings | None = None,
    seeds: Sequence[int] | None = None,
    on_progress: Callable[[int], None] | None = None,
    noise_model: NoiseModel | None = None,
) -> InversionResult:
    """Invert ``images`` (uint8 N×H×W×3, or float N×3×H×W in [0, 1]) through ``generator``.

    Stage ``noise`` scores with ``noise_model`` (the members' model a calibration holds, see
    :mod:`genprint.verify.noise_model`) when given; other stages ignore it.

    ``seeds`` (one per image) fix the random starts; by default each image's seed is a hash of
    its pixels (:func:`image_seed`). ``settings`` default to :func:`default_settings`. Images
    must be the generator's resolution (see :func:`genprint.verify.verifier.fit_to_resolution`).
    """
    gen = generator if isinstance(generator, GeneratorHandle) else GeneratorHandle(
        str(getattr(generator, "name", type(generator).__name__)), generator, "<object>")
    settings = settings or default_settings(gen)
    if settings.stage == "decoder":
        gen = decoder_stage(gen)
    x = to_tensor(images)
    if settings.stage == "noise":
        return _invert_by_noise(gen, x, settings, noise_model, on_progress)
    n = len(x)
    seeds = [image_seed(img) for img in x] if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images")
    r_count = settings.restarts
    best = torch.full((n * r_count,), float("inf"))
    latents = torch.zeros((n * r_count, *gen.latent_shape))
    steps = np.zeros(n * r_count, dtype=np.int64)
    per_group = max(1, settings.batch_size // r_count)
    t0 = time.perf_counter()
    for s in range(0, n, per_group):
        e = min(n, s + per_group)
        b, zb, st = _invert_group(gen, x[s:e], seeds[s:e], settings)
        best[s * r_count : e * r_count] = b
        latents[s * r_count : e * r_count] = zb
        steps[s * r_count : e * r_count] = st
        if on_progress:
            on_progress(e - s)
    per_restart = best.view(n, r_count)
    winner = per_restart.argmin(dim=1)
    z_best = latents.view(n, r_count, *gen.latent_shape)[torch.arange(n), winner]
    return InversionResult(
        loss=per_restart.min(dim=1).values.numpy().astype(np.float64),
        restart_losses=per_restart.numpy().astype(np.float64),
        latents=z_best,
        steps_run=steps.reshape(n, r_count),
        seconds=time.perf_counter() - t0,
    )
