"""DDPM training noise schedule and deterministic DDIM sampling / inversion (η = 0).

Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021. The sampler is written with
plain tensor operations, so it is differentiable with respect to its starting noise: the
``invert`` method optimises through it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

T_TRAIN = 1000


def alphas_cumprod(t_train: int = T_TRAIN) -> torch.Tensor:
    """ᾱ_t of the cosine schedule (Nichol & Dhariwal 2021), t = 0..T−1."""
    s = 0.008
    steps = torch.arange(t_train + 1, dtype=torch.float64) / t_train
    f = torch.cos((steps + s) / (1 + s) * torch.pi / 2) ** 2
    abar = (f / f[0]).clamp(min=1e-5)
    return abar[1:].float()


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             abar: torch.Tensor) -> torch.Tensor:
    """Forward process: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε."""
    a = abar[t].view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def ddim_timesteps(n_steps: int, t_train: int = T_TRAIN) -> list[int]:
    """``n_steps`` evenly spaced training timesteps, from the noisiest down to 0."""
    if n_steps < 1:
        raise ValueError("DDIM needs at least one step")
    ts = torch.linspace(t_train - 1, 0, n_steps).round().long().tolist()
    return [int(t) for t in ts]


EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ddim_sample(eps: EpsModel, x_t: torch.Tensor, n_steps: int, abar: torch.Tensor,
                clip: float | None = None) -> torch.Tensor:
    """Deterministic DDIM chain from noise ``x_t`` (at t = T−1) to x_0; differentiable."""
    ts = ddim_timesteps(n_steps, len(abar))
    x = x_t
    for k, t in enumerate(ts):
        a_t = abar[t]
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        e = eps(x, tt)
        x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        if k + 1 < len(ts):
            a_prev = abar[ts[k + 1]]
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
        else:
            x = x0
    return x


def ddim_invert(eps: EpsModel, x0: torch.Tensor, n_steps: int, abar: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM inversion: the noise that (approximately) samples back to ``x0``."""
    ts = list(reversed(ddim_timesteps(n_steps, len(abar))))
    x = x0
    for k in range(len(ts) - 1):
        t, t_next = ts[k], ts[k + 1]
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        e = eps(x, tt)
        a_t, a_next = abar[t], abar[t_next]
        pred_x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
        x = a_next.sqrt() * pred_x0 + (1 - a_next).sqrt() * e
    return x
