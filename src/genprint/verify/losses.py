"""Per-sample reconstruction losses for inversion: MSE (default), L1 and 1 − SSIM.

Every loss maps a reconstruction and its target, both N×C×H×W in [0, 1], to N losses (one per
sample, never averaged over the batch), so that a batch of images × restarts is optimised as
independent problems: the gradient of the summed loss for one sample is that sample's own.
They are kept in the registry :data:`INVERSION_LOSSES` (register another per-sample loss with
``@INVERSION_LOSSES.register("name")``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genprint.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

INVERSION_LOSSES: Registry[LossFn] = Registry("inversion loss")
"""Per-sample reconstruction losses by name (``--loss`` of ``verify``)."""


@INVERSION_LOSSES.register("mse")
def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample."""
    return (x - y).pow(2).flatten(1).mean(1)


@INVERSION_LOSSES.register("l1")
def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per sample."""
    return (x - y).abs().flatten(1).mean(1)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    ax = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


@INVERSION_LOSSES.register("ssim")
def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """1 − SSIM per sample (Gaussian window, per channel, 'valid' borders; Wang et al. 2004).

    The window shrinks to the image size for very small images.
    """
    c = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    w = _gaussian_window(window, sigma, c, x)
    c1, c2 = 0.01**2, 0.03**2
    mu_x = F.conv2d(x, w, groups=c)
    mu_y = F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return (1.0 - s.flatten(1).mean(1)).clamp(min=0.0)


LOSSES = tuple(INVERSION_LOSSES.names())
"""The built-in loss names (kept for callers of earlier versions; the registry is the source)."""


def get_loss(name: str) -> LossFn:
    """The per-sample loss called ``name`` (see :data:`INVERSION_LOSSES`)."""
    if name not in INVERSION_LOSSES:
        from genprint.plugins import PLUGIN_HINT

        raise ValueError(f"loss {name!r} is not registered in this process; known: "
                         f"{', '.join(INVERSION_LOSSES)} ({PLUGIN_HINT})")
    return INVERSION_LOSSES.get(name)
