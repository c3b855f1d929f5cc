"""The small networks of the zoo: convolutional decoders/encoders, a discriminator, a tiny
U-Net and a latent noise predictor. Every size follows from ``resolution`` (a power of two ≥ 8).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

UPSAMPLINGS = ("tconv", "nearest", "bilinear", "pshuffle")


def _n_ups(resolution: int) -> int:
    n = int(math.log2(resolution)) - 2
    if resolution < 8 or 2 ** (n + 2) != resolution:
        raise ValueError(f"resolution must be a power of two ≥ 8, got {resolution}")
    return n


class Up(nn.Module):
    """×2 upsampling by one of :data:`UPSAMPLINGS`, followed by BatchNorm and ReLU."""

    def __init__(self, c_in: int, c_out: int, kind: str) -> None:
        super().__init__()
        if kind == "tconv":
            self.up: nn.Module = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)
        elif kind in ("nearest", "bilinear"):
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode=kind,
                            **({"align_corners": False} if kind == "bilinear" else {})),
                nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
            )
        elif kind == "pshuffle":
            self.up = nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 3, 1, 1, bias=False),
                                    nn.PixelShuffle(2))
        else:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {kind!r}")
        self.post = nn.Sequential(nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.up(x))


class ConvDecoder(nn.Module):
    """Flat latent → image in [0, 1]: linear to 4×4, then ×2 upsamplings to ``resolution``."""

    def __init__(self, latent_dim: int, resolution: int, upsampling: str, width: int = 128) -> None:
        super().__init__()
        n = _n_ups(resolution)
        self.width = width
        self.fc = nn.Sequential(nn.Linear(latent_dim, width * 16, bias=False),
                                nn.BatchNorm1d(width * 16), nn.ReLU(inplace=True))
        chans = [max(16, width // 2**k) for k in range(n + 1)]
        self.ups = nn.Sequential(*[Up(chans[k], chans[k + 1], upsampling) for k in range(n)])
        self.out = nn.Conv2d(chans[-1], 3, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.width, 4, 4)
        return torch.sigmoid(self.out(self.ups(h)))


class ConvEncoder(nn.Module):
    """Image in [0, 1] → ``n_out`` numbers (strided convolutions down to 4×4, then linear)."""

    def __init__(self, n_out: int, resolution: int, width: int = 128) -> None:
        super().__init__()
        n = _n_ups(resolution)
        chans = [3] + [max(16, width // 2 ** (n - 1 - k)) for k in range(n)]
        layers: list[nn.Module] = []
        for k in range(n):
            layers += [nn.Conv2d(chans[k], chans[k + 1], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1] * 16, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x * 2 - 1).flatten(1))


class Discriminator(nn.Module):
    """Spectrally normalised convolutional critic for GAN training (not shipped)."""

    def __init__(self, resolution: int, width: int = 128) -> None:
        super().__init__()
        n = _n_ups(resolution)
        chans = [3] + [max(16, width // 2 ** (n - 1 - k)) for k in range(n)]
        layers: list[nn.Module] = []
        for k in range(n):
            layers += [spectral_norm(nn.Conv2d(chans[k], chans[k + 1], 4, 2, 1)),
                       nn.LeakyReLU(0.2, inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.fc = spectral_norm(nn.Linear(chans[-1] * 16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x * 2 - 1).flatten(1)).squeeze(1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (integer or real) diffusion timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int) -> None:
        super().__init__()
        self.n1 = nn.GroupNorm(8, c_in)
        self.c1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.t = nn.Linear(t_dim, c_out)
        self.n2 = nn.GroupNorm(8, c_out)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.c1(torch.nn.functional.silu(self.n1(x)))
        h = h + self.t(temb)[:, :, None, None]
        h = self.c2(torch.nn.functional.silu(self.n2(h)))
        return h + self.skip(x)


class TinyUNet(nn.Module):
    """Noise predictor ε(x_t, t) for pixel-space diffusion: two downsamplings, one block each."""

    def __init__(self, width: int = 32, t_dim: int = 64) -> None:
        super().__init__()
        w = width
        self.t_dim = t_dim
        self.temb = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.inp = nn.Conv2d(3, w, 3, 1, 1)
        self.d1 = ResBlock(w, w, t_dim)
        self.down1 = nn.Conv2d(w, w, 4, 2, 1)
        self.d2 = ResBlock(w, 2 * w, t_dim)
        self.down2 = nn.Conv2d(2 * w, 2 * w, 4, 2, 1)
        self.mid = ResBlock(2 * w, 2 * w, t_dim)
        self.up2 = nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1)
        self.u2 = ResBlock(4 * w, 2 * w, t_dim)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.u1 = ResBlock(2 * w, w, t_dim)
        self.out = nn.Sequential(nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, 3, 3, 1, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.temb(timestep_embedding(t, self.t_dim))
        h1 = self.d1(self.inp(x), e)
        h2 = self.d2(self.down1(h1), e)
        h = self.mid(self.down2(h2), e)
        h = self.u2(torch.cat([self.up2(h), h2], 1), e)
        h = self.u1(torch.cat([self.up1(h), h1], 1), e)
        return self.out(h)


class LatentEps(nn.Module):
    """Noise predictor ε(z_t, t) for diffusion on a flat autoencoder latent (residual MLP)."""

    def __init__(self, dim: int, hidden: int = 256, t_dim: int = 64, depth: int = 3) -> None:
        super().__init__()
        self.t_dim = t_dim
        self.inp = nn.Linear(dim, hidden)
        self.temb = nn.Sequential(nn.Linear(t_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(z) + self.temb(timestep_embedding(t, self.t_dim))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)
