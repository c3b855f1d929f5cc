"""The generator interface every zoo model (and every user generator) exposes.

``latent_shape``, ``sample_latent(n, seed)``, a differentiable ``decode(z)`` returning images in
[0, 1] (N×3×H×W), ``encode(x)`` where the generator has an encoder (``has_encoder``), and
``sample(n, seed)`` returning uint8 N×H×W×3 arrays ready to be written as images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from genprint.world.zoo import diffusion
from genprint.world.zoo.nets import ConvDecoder, ConvEncoder, LatentEps, TinyUNet

FAMILIES = ("gan", "vae", "ddim", "ldm")
LATENT_CLIP = 3.0
"""Latent diffusion clips its predicted standardised latent to ±3 at every DDIM step, as pixel
diffusion clips x0 to [−1, 1]. Without it, the first steps (√ᾱ ≈ 0.003 under the cosine schedule)
amplify the ε-network's error several hundredfold: measured on ldm-tconv-s0 with 10 steps, the
latents' standard deviation was 18.7 instead of ≈ 1 and 72% of the pixels saturated; with the clip,
1.3 and 0.2%."""


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything that defines a zoo generator and how it is trained."""

    name: str
    family: str  # gan | vae | ddim | ldm
    upsampling: str  # decoder upsampling (tconv, nearest, bilinear, pshuffle; "none" for ddim)
    seed: int
    resolution: int = 32
    latent_dim: int = 64
    width: int = 128
    steps: int = 2000  # main training steps (for ldm: diffusion steps)
    ae_steps: int = 0  # ldm only: autoencoder steps before the diffusion stage
    batch_size: int = 64
    lr: float = 2e-4
    ddim_steps: int = 10  # sampling chain length of diffusion generators
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        """A short architecture name (what differs between architectures, not seeds)."""
        return {
            "gan": f"dcgan-{self.upsampling}",
            "vae": f"vae-{self.upsampling}",
            "ddim": "unet-ddim",
            "ldm": f"ldm-{self.upsampling}",
        }[self.family]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["architecture"] = self.architecture
        return d


class ZooGenerator(nn.Module):
    """A frozen generator of the zoo; ``decode`` is differentiable with respect to ``z``."""

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__()
        if spec.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {spec.family!r}")
        self.spec = spec
        self.name = spec.name
        self.family = spec.family
        self.resolution = spec.resolution
        r, d = spec.resolution, spec.latent_dim
        if spec.family in ("gan", "vae", "ldm"):
            self.decoder = ConvDecoder(d, r, spec.upsampling, spec.width)
        if spec.family in ("vae", "ldm"):
            self.encoder = ConvEncoder(2 * d, r, spec.width)
        if spec.family == "ddim":
            self.eps = TinyUNet(width=spec.width)
        if spec.family == "ldm":
            self.eps = LatentEps(d)
            self.register_buffer("latent_mean", torch.zeros(d))
            self.register_buffer("latent_std", torch.ones(d))
        if spec.family in ("ddim", "ldm"):
            self.register_buffer("abar", diffusion.alphas_cumprod())
        self.eval()

    # -- the public interface -------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent (without the batch dimension)."""
        if self.family == "ddim":
            return (3, self.resolution, self.resolution)
        return (self.spec.latent_dim,)

    @property
    def has_encoder(self) -> bool:
        return self.family in ("vae", "ldm", "ddim")

    def sample_latent(self, n: int, seed: int) -> torch.Tensor:
        """``n`` latents from the prior (standard normal), deterministic for ``seed``."""
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn((n, *self.latent_shape), generator=g)

    def decode(self, z: torch.Tensor, ddim_steps: int | None = None) -> torch.Tensor:
        """Latents → images in [0, 1], N×3×H×W (differentiable; diffusion runs its DDIM chain)."""
        steps = ddim_steps or self.spec.ddim_steps
        if self.family in ("gan", "vae"):
            return self.decoder(z)
        if self.family == "ddim":
            x = diffusion.ddim_sample(self.eps, z, steps, self.abar, clip=1.0)
            return ((x + 1) / 2).clamp(0.0, 1.0)
        return self.decoder(self.chain_latent(z, steps) * self.latent_std + self.latent_mean)

    def chain_latent(self, z: torch.Tensor, ddim_steps: int | None = None) -> torch.Tensor:
        """Latent diffusion only: the DDIM chain's output, a standardised autoencoder latent
        (``decode`` = the autoencoder's decoder applied to it, after un-standardising)."""
        if self.family != "ldm":
            raise NotImplementedError(f"{self.name} ({self.family}) has no latent chain")
        steps = ddim_steps or self.spec.ddim_steps
        return diffusion.ddim_sample(self.eps, z, steps, self.abar, clip=LATENT_CLIP)

    def encode(self, x: torch.Tensor, ddim_steps: int | None = None) -> torch.Tensor:
        """Images in [0, 1] (N×3×H×W) → latents (encoder mean; DDIM inversion for diffusion)."""
        steps = ddim_steps or self.spec.ddim_steps
        if self.family == "vae":
            return self.encoder(x).chunk(2, dim=1)[0]
        if self.family == "ldm":
            mu = self.encoder(x).chunk(2, dim=1)[0]
            return diffusion.ddim_invert(self.eps, (mu - self.latent_mean) / self.latent_std,
                                         steps, self.abar)
        if self.family == "ddim":
            return diffusion.ddim_invert(self.eps, x * 2 - 1, steps, self.abar)
        raise NotImplementedError(f"{self.name} ({self.family}) has no encoder")

    @torch.no_grad()
    def sample(self, n: int, seed: int, batch_size: int = 256) -> np.ndarray:
        """``n`` images as uint8 N×H×W×3, deterministic for ``seed``."""
        z = self.sample_latent(n, seed)
        out = []
        for start in range(0, n, batch_size):
            x = self.decode(z[start : start + batch_size])
            out.append((x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
        if not out:
            return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        return torch.cat(out).numpy()

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def freeze(self) -> ZooGenerator:
        """Evaluation mode, no parameter gradients (gradients still flow to ``z``)."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self
