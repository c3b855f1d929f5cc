"""Training the zoo (``genprint zoo train NAME``): deterministic, resumable, on CPU.

Every generator trains on the same set of camera images (training cameras only; held-out
cameras never reach the zoo). Randomness of step ``k`` (batch choice, noise, timesteps) comes
from a generator seeded by (generator seed, stage, k), and the full training state is
checkpointed every ``ckpt_every`` steps, so an interrupted run resumes to exactly the weights an
uninterrupted run gives (with the same number of threads).

Objectives:

* ``gan``: hinge loss, spectrally normalised critic, Adam(β=(0.5, 0.999)).
* ``vae``: Gaussian VAE, summed squared error + β·KL.
* ``ddim``: ε-prediction DDPM loss with a cosine schedule; exponential moving average of weights.
* ``ldm``: a β-small VAE first (``ae_steps``), then ε-prediction on its standardised latent
  means (``steps``); EMA for the noise predictor.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from genprint.storage.atomic import atomic_file
from genprint.world.zoo import diffusion
from genprint.world.zoo.generator import GeneratorSpec, ZooGenerator
from genprint.world.zoo.nets import Discriminator

N_TRAIN_IMAGES = 5000
TRAIN_DATA_SEED = 20231001


def training_images(resolution: int, n: int = N_TRAIN_IMAGES) -> torch.Tensor:
    """The zoo's training set: ``n`` camera images (training cameras), N×3×H×W in [0, 1]."""
    from genprint.world.cameras import camera_images

    imgs, _ = camera_images(n, resolution, TRAIN_DATA_SEED)
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(255.0)


def _step_rng(spec: GeneratorSpec, stage: str, step: int) -> torch.Generator:
    code = sum(ord(c) * 31**k for k, c in enumerate(stage)) % 100_003
    return torch.Generator().manual_seed(spec.seed * 1_000_003 + code * 100_003 + step)


def _batch(data: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    idx = torch.randint(len(data), (size,), generator=g)
    x = data[idx]
    flip = torch.rand(size, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
            be.copy_(bm)


class _Trainer:
    """Holds the state of one training run; ``state_dict`` is the whole checkpoint."""

    def __init__(self, spec: GeneratorSpec) -> None:
        torch.manual_seed(spec.seed)
        self.spec = spec
        self.gen = ZooGenerator(spec)
        self.gen.train()
        self.stage = "ae" if spec.family == "ldm" else "main"
        self.step = 0
        self.seconds = 0.0
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self.disc: Discriminator | None = None
        self.ema: torch.nn.Module | None = None
        fam = spec.family
        if fam == "gan":
            self.disc = Discriminator(spec.resolution, spec.width)
            self.opts["g"] = torch.optim.Adam(self.gen.decoder.parameters(), spec.lr, (0.5, 0.999))
            self.opts["d"] = torch.optim.Adam(self.disc.parameters(), spec.lr, (0.5, 0.999))
        elif fam in ("vae", "ldm"):
            params = list(self.gen.encoder.parameters()) + list(self.gen.decoder.parameters())
            self.opts["ae"] = torch.optim.Adam(params, spec.lr)
        if fam in ("ddim", "ldm"):
            self.opts["eps"] = torch.optim.Adam(self.gen.eps.parameters(),
                                                spec.lr if fam == "ddim" else 1e-3)
            self.ema = copy.deepcopy(self.gen.eps)

    # -- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(), "stage": self.stage, "step": self.step,
            "seconds": self.seconds, "gen": self.gen.state_dict(),
            "disc": self.disc.state_dict() if self.disc else None,
            "ema": self.ema.state_dict() if self.ema else None,
            "opts": {k: o.state_dict() for k, o in self.opts.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["spec"] != self.spec.to_dict():
            raise ValueError("checkpoint was made for different settings; remove it to retrain")
        self.stage, self.step, self.seconds = state["stage"], state["step"], state["seconds"]
        self.gen.load_state_dict(state["gen"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        for k, o in self.opts.items():
            o.load_state_dict(state["opts"][k])

    # -- one step of each objective --------------------------------------------------------
    def _vae_loss(self, x: torch.Tensor, g: torch.Generator, beta: float) -> torch.Tensor:
        mu, logvar = self.gen.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-10, 10)
        z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g)
        rec = self.gen.decoder(z)
        mse = ((rec - x) ** 2).flatten(1).sum(1).mean()
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1).mean()
        sigma2 = float(self.spec.extra.get("sigma2", 0.005))  # decoder noise variance
        return mse / (2 * sigma2) + beta * kl

    def train_step(self, data: torch.Tensor, latents: torch.Tensor | None) -> float:
        spec, fam = self.spec, self.spec.family
        g = _step_rng(spec, self.stage, self.step)
        if fam == "gan":
            assert self.disc is not None
            x = _batch(data, spec.batch_size, g)
            z = torch.randn((spec.batch_size, spec.latent_dim), generator=g)
            fake = self.gen.decoder(z)
            d_loss = F.relu(1 - self.disc(x)).mean() + F.relu(1 + self.disc(fake.detach())).mean()
            self.opts["d"].zero_grad()
            d_loss.backward()
            self.opts["d"].step()
            g_loss = -self.disc(fake).mean()
            self.opts["g"].zero_grad()
            g_loss.backward()
            self.opts["g"].step()
            return d_loss.item()
        if fam == "vae" or self.stage == "ae":
            x = _batch(data, spec.batch_size, g)
            loss = self._vae_loss(x, g, float(spec.extra.get("beta", 1.0)))
            self.opts["ae"].zero_grad()
            loss.backward()
            self.opts["ae"].step()
            return loss.item()
        assert self.ema is not None
        if fam == "ddim":
            x0 = _batch(data, spec.batch_size, g) * 2 - 1
        else:
            assert latents is not None
            n = int(spec.extra.get("latent_batch", 256))
            x0 = latents[torch.randint(len(latents), (n,), generator=g)]
        t = torch.randint(0, diffusion.T_TRAIN, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss = F.mse_loss(self.gen.eps(diffusion.q_sample(x0, t, noise, self.gen.abar), t), noise)
        self.opts["eps"].zero_grad()
        loss.backward()
        self.opts["eps"].step()
        _ema_update(self.ema, self.gen.eps, float(spec.extra.get("ema", 0.995)))
        return loss.item()

    def stage_length(self) -> int:
        return self.spec.ae_steps if self.stage == "ae" else self.spec.steps

    def total_steps(self) -> int:
        return self.spec.steps + (self.spec.ae_steps if self.spec.family == "ldm" else 0)

    def done_steps(self) -> int:
        return self.step + (self.spec.ae_steps if self.stage == "main" and
                            self.spec.family == "ldm" else 0)

    @torch.no_grad()
    def standardised_latents(self, data: torch.Tensor) -> torch.Tensor:
        """LDM: encoder means of the training set, standardised (statistics stored as buffers)."""
        self.gen.eval()
        mu = torch.cat([self.gen.encoder(data[k : k + 500]).chunk(2, 1)[0]
                        for k in range(0, len(data), 500)])
        self.gen.latent_mean.copy_(mu.mean(0))
        self.gen.latent_std.copy_(mu.std(0).clamp(min=1e-4))
        self.gen.train()
        return (mu - self.gen.latent_mean) / self.gen.latent_std

    def final_generator(self) -> ZooGenerator:
        gen = copy.deepcopy(self.gen)
        if self.ema is not None:
            gen.eps.load_state_dict(self.ema.state_dict())
        return gen.freeze()


def _save_atomic(obj: Any, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def train_generator(
    spec: GeneratorSpec,
    out_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    threads: int = 1,
    ckpt_every: int = 200,
    data: torch.Tensor | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``spec`` (resuming from ``work_dir`` if a checkpoint is there), write its weights
    and model card into ``out_dir``; returns the card.

    ``on_progress(done_steps, total_steps, loss)`` is called after every step.
    """
    from genprint.world.zoo.store import write_generator

    torch.set_num_threads(threads)
    work = Path(work_dir) / spec.name
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint.pt"
    trainer = _Trainer(spec)
    if ckpt.exists():
        trainer.load_state_dict(torch.load(ckpt, weights_only=False))
    if data is None:
        data = training_images(spec.resolution)
    latents = None
    loss = float("nan")
    while True:
        if trainer.stage == "main" and spec.family == "ldm" and latents is None:
            latents = trainer.standardised_latents(data)
        if trainer.step >= trainer.stage_length():
            if trainer.stage == "ae":
                trainer.stage, trainer.step = "main", 0
                continue
            break
        t0 = time.perf_counter()
        loss = trainer.train_step(data, latents)
        trainer.step += 1
        trainer.seconds += time.perf_counter() - t0
        if on_progress:
            on_progress(trainer.done_steps(), trainer.total_steps(), loss)
        if trainer.step % ckpt_every == 0:
            _save_atomic(trainer.state_dict(), ckpt)
    _save_atomic(trainer.state_dict(), ckpt)
    gen = trainer.final_generator()
    from genprint.storage.model_dir import creation_info

    pixels = data.detach().cpu().contiguous().numpy()
    info = {"training_steps": trainer.total_steps(), "train_seconds": round(trainer.seconds, 1),
            "train_threads": threads, "final_loss": loss,
            "training_data": f"{len(data)} camera images (training cameras), seed "
                             f"{TRAIN_DATA_SEED}",
            # what a rebuild must match: the same training pixels and, for the same weights,
            # the same libraries (the cameras' demosaicing and JPEG come from them)
            "training_data_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
            "command": f"genprint zoo train {spec.name} --threads {threads}",
            "created": creation_info()}
    card = write_generator(gen, out_dir, info)
    (work / "card.json").write_text(json.dumps(card, indent=2))
    return card

