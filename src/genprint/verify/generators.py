"""Resolving generator specs for verification: ``zoo:NAME``, ``zoo:*``, ``package.module:factory``.

A spec names one or several generators:

* ``zoo:NAME`` — a trained generator of the built-in zoo (weights checked against their card);
* ``zoo:*`` — every trained zoo generator;
* ``package.module:factory`` — a user's generator: ``factory()`` is called with no argument and
  must return an object with the generator interface (``latent_shape``, ``sample_latent(n, seed)``,
  a differentiable ``decode(z)`` returning N×3×H×W images in [0, 1], optionally ``encode(x)`` with
  ``has_encoder``);
* a comma-separated list of the above.

Every problem raises :class:`GeneratorSpecError` with a message meant for the user (the CLI
prints it and exits with code 2).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REQUIRED = ("latent_shape", "sample_latent", "decode")
"""Attributes a generator object must have."""


class GeneratorSpecError(ValueError):
    """A generator spec that cannot be resolved (the message says why and what to do)."""


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@dataclass
class GeneratorHandle:
    """A generator seen through the interface inversion needs, with where it came from.

    ``decode`` / ``encode`` pass ``ddim_steps`` through only to generators that accept it
    (diffusion models), so every generator can be driven the same way.
    """

    name: str
    obj: Any
    spec: str
    calibration_path: Path | None = None
    """Default place of its calibration JSON (None: the user must give one)."""
    sha256: str | None = None
    """Checksum of the weights (a zoo card's, the object's ``sha256``, or
    :func:`weights_fingerprint`), stored in calibrations to catch stale ones."""

    def __post_init__(self) -> None:
        freeze(self.obj)
        self._ddim = _accepts(self.obj.decode, "ddim_steps")
        self._resolution: int | None = getattr(self.obj, "resolution", None)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent."""
        return tuple(int(s) for s in self.obj.latent_shape)

    @property
    def has_encoder(self) -> bool:
        """Whether the generator can map images to latents (``encode``)."""
        if not hasattr(self.obj, "encode"):
            return False
        return bool(getattr(self.obj, "has_encoder", True))

    @property
    def device(self) -> torch.device:
        """Where the generator's parameters live (CPU for objects without parameters)."""
        params = getattr(self.obj, "parameters", None)
        if callable(params):
            for p in params():
                if isinstance(p, torch.Tensor):
                    return p.device
        return torch.device("cpu")

    @property
    def family(self) -> str | None:
        """The generator's family where it says (zoo: gan, vae, ddim, ldm)."""
        family = getattr(self.obj, "family", None)
        return str(family) if family is not None else None

    @property
    def is_diffusion(self) -> bool:
        """Whether ``decode`` runs a sampling chain whose length can be chosen."""
        if self.family is not None:
            return self.family in ("ddim", "ldm")
        return self._ddim

    @property
    def resolution(self) -> int:
        """Side of the generated images (from ``resolution`` or one decoded latent)."""
        if self._resolution is None:
            with torch.no_grad():
                self._resolution = int(self.decode(self.sample_latent(1, 0)).shape[-1])
        return self._resolution

    def sample_latent(self, n: int, seed: int) -> torch.Tensor:
        """``n`` latents from the prior, deterministic for ``seed``."""
        return self.obj.sample_latent(n, seed)

    def decode(self, z: torch.Tensor, ddim_steps: int | None = None) -> torch.Tensor:
        """Latents → images in [0, 1] (differentiable)."""
        if self._ddim and ddim_steps is not None:
            return self.obj.decode(z, ddim_steps=ddim_steps)
        return self.obj.decode(z)

    def encode(self, x: torch.Tensor, ddim_steps: int | None = None) -> torch.Tensor:
        """Images in [0, 1] → latents (only where :attr:`has_encoder`)."""
        if ddim_steps is not None and _accepts(self.obj.encode, "ddim_steps"):
            return self.obj.encode(x, ddim_steps=ddim_steps)
        return self.obj.encode(x)

    @torch.no_grad()
    def sample(self, n: int, seed: int, batch_size: int = 256,
               ddim_steps: int | None = None) -> np.ndarray:
        """``n`` samples as uint8 N×H×W×3 (the generator's latents for ``seed``)."""
        z = self.sample_latent(n, seed)
        out = [self.decode(z[s : s + batch_size], ddim_steps) for s in range(0, n, batch_size)]
        if not out:
            return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        x = torch.cat(out).clamp(0, 1)
        return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class _LatentDecoderStage:
    """The last stage of a zoo latent-diffusion model: its autoencoder's decoder.

    Latents are the (normalised) outputs of the DDIM chain; ``sample_latent`` runs the chain on
    prior noise, so ``decode(sample_latent(n, s))`` is exactly the generator's sample for ``s``.
    ``encode`` is the autoencoder's encoder mean. Inverting this stage is what LatentTracer does
    for latent diffusion.
    """

    def __init__(self, gen: Any) -> None:
        self.gen = gen
        self.name = f"{gen.name}/decoder"
        self.resolution = gen.resolution
        self.latent_shape = (int(gen.latent_mean.numel()),)
        self.has_encoder = True

    def parameters(self) -> Any:
        return self.gen.parameters()

    def sample_latent(self, n: int, seed: int) -> torch.Tensor:
        with torch.no_grad():
            return self.gen.chain_latent(self.gen.sample_latent(n, seed))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.gen.decoder(z * self.gen.latent_std + self.gen.latent_mean)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mu = self.gen.encoder(x).chunk(2, dim=1)[0]
        return (mu - self.gen.latent_mean) / self.gen.latent_std


def decoder_stage(handle: GeneratorHandle) -> GeneratorHandle:
    """The generator's last stage (an autoencoder's decoder) as a generator of its own.

    Zoo latent-diffusion models provide it; a user's generator can too, with a method
    ``decoder_stage()`` returning an object with the generator interface.
    """
    obj = handle.obj
    stage: Any = None
    if callable(getattr(obj, "decoder_stage", None)):
        stage = obj.decoder_stage()
        check_interface(stage, f"{handle.spec} decoder_stage()")
    elif getattr(obj, "family", None) == "ldm" and all(
            hasattr(obj, a) for a in ("decoder", "encoder", "chain_latent", "latent_mean")):
        stage = _LatentDecoderStage(obj)
    if stage is None:
        raise ValueError(f"generator {handle.name} has no decoder stage (stage='decoder' needs a "
                         "latent-diffusion model or a decoder_stage() method)")
    return GeneratorHandle(handle.name, stage, handle.spec, handle.calibration_path,
                           handle.sha256)


def freeze(obj: Any) -> None:
    """Evaluation mode and no parameter gradients (gradients still flow to the latents)."""
    if isinstance(obj, torch.nn.Module):
        obj.eval()
    params = getattr(obj, "parameters", None)
    if callable(params):
        for p in params():
            if isinstance(p, torch.Tensor):
                p.requires_grad_(False)


def check_interface(obj: Any, where: str) -> None:
    """Raise :class:`GeneratorSpecError` unless ``obj`` has the generator interface."""
    missing = [a for a in REQUIRED if not hasattr(obj, a)]
    if missing:
        raise GeneratorSpecError(
            f"{where} returned a {type(obj).__name__}, which has no {', '.join(missing)}; a "
            "generator needs latent_shape, sample_latent(n, seed) and a differentiable "
            "decode(z) -> N×3×H×W in [0, 1] (optionally encode(x) with has_encoder)"
        )
    if not callable(obj.decode) or not callable(obj.sample_latent):
        raise GeneratorSpecError(f"{where}: decode and sample_latent must be callable")


def weights_fingerprint(obj: Any) -> str | None:
    """sha256 of a generator's weights, to tie a calibration to them: the tensors of ``obj``
    if it is a ``torch.nn.Module``, else of the modules among its attributes (by attribute
    name). None when it holds no module (the calibration then cannot check its weights)."""
    from torch import nn

    from genprint.storage.model_dir import tensors_sha256

    if isinstance(obj, nn.Module):
        modules = [("", obj)]
    else:
        modules = sorted((k, v) for k, v in vars(obj).items() if isinstance(v, nn.Module)) \
            if hasattr(obj, "__dict__") else []
    if not modules:
        return None
    return tensors_sha256((f"{prefix}.{key}:{tensor.dtype}", tensor)
                          for prefix, module in modules
                          for key, tensor in sorted(module.state_dict().items()))


def _need_tensor(value: Any, method: str, where: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise GeneratorSpecError(f"{where}: {method} must return a torch tensor, got "
                                 f"{type(value).__name__}")


def check_contract(obj: Any, where: str) -> None:
    """Two-latent check of what inversion relies on: ``sample_latent`` gives a tensor of
    ``latent_shape`` per latent, and ``decode`` maps them to a finite float32 N×3×H×W tensor in
    [0, 1], one image per latent, through which gradients flow. A :class:`GeneratorSpecError`
    says what is wrong (a calibration of a generator that breaks it would be meaningless)."""
    try:
        z = obj.sample_latent(2, 0)
    except Exception as exc:  # noqa: BLE001 - user code
        raise GeneratorSpecError(f"{where}: sample_latent(2, 0) failed: "
                                 f"{type(exc).__name__}: {exc}") from None
    _need_tensor(z, "sample_latent", where)
    expected = (2, *(int(v) for v in obj.latent_shape))
    if tuple(z.shape) != expected:
        raise GeneratorSpecError(f"{where}: sample_latent(2, 0) has shape {tuple(z.shape)}, "
                                 f"latent_shape says {expected[1:]} per latent")
    z = z.detach().clone().float().requires_grad_(True)
    try:
        with torch.enable_grad():
            x = obj.decode(z)
            grad_ok = isinstance(x, torch.Tensor) and x.requires_grad
            if grad_ok:
                x.float().sum().backward()
                grad_ok = z.grad is not None
    except Exception as exc:  # noqa: BLE001 - user code
        raise GeneratorSpecError(f"{where}: decode(z) failed, or gradients do not flow through "
                                 f"it: {type(exc).__name__}: {exc}") from None
    _need_tensor(x, "decode", where)
    if x.ndim != 4 or x.shape[0] != 2 or x.shape[1] != 3:
        raise GeneratorSpecError(f"{where}: decode of 2 latents has shape {tuple(x.shape)}; "
                                 "expected 2×3×H×W (one image per latent, channels first, RGB)")
    if x.dtype != torch.float32:
        raise GeneratorSpecError(f"{where}: decode(z) returns {x.dtype}; inversion runs in "
                                 "float32 (return x.float())")
    if not grad_ok:
        raise GeneratorSpecError(f"{where}: gradients do not flow from decode(z) back to z (is "
                                 "decode under torch.no_grad(), or detached?); inversion needs "
                                 "them")
    values = x.detach()
    if not torch.isfinite(values).all():
        raise GeneratorSpecError(f"{where}: decode(z) gave NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if lo < -0.02 or hi > 1.02:
        raise GeneratorSpecError(f"{where}: decode(z) gave values in [{lo:.3g}, {hi:.3g}]; "
                                 "images must be in [0, 1] (e.g. (x + 1) / 2 for a tanh "
                                 "output)")


def _zoo(name: str) -> GeneratorHandle:
    from genprint.world import zoo
    from genprint.world.zoo.store import find_card, read_card, train_hint

    if name not in zoo.ZOO:
        raise GeneratorSpecError(f"unknown zoo generator {name!r}; known: "
                                 f"{', '.join(zoo.ZOO.names())}")
    card_path = find_card(name)
    if card_path is None:
        raise GeneratorSpecError(f"zoo generator {name!r} has no trained weights yet; "
                                 f"{train_hint(name)}")
    try:
        gen = zoo.load(name)
    except (FileNotFoundError, ValueError) as exc:
        raise GeneratorSpecError(f"zoo:{name}: {exc}") from None
    return GeneratorHandle(name, gen, f"zoo:{name}",
                           card_path.parent / f"{name}.calibration.json",
                           read_card(card_path).get("sha256"))


def _factory(spec: str) -> GeneratorHandle:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or not module_name.replace(".", "").replace("_", "").isalnum():
        raise GeneratorSpecError(f"bad generator spec {spec!r}: expected zoo:NAME, zoo:* or "
                                 "package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise GeneratorSpecError(
            f"{spec}: cannot import module {module_name!r} ({exc}); is it installed or on "
            "PYTHONPATH?") from None
    except Exception as exc:  # noqa: BLE001 - user code: report, never crash
        raise GeneratorSpecError(f"{spec}: importing {module_name!r} failed: "
                                 f"{type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise GeneratorSpecError(f"{spec}: module {module_name!r} has no attribute {attr!r}")
    if inspect.ismodule(factory):
        raise GeneratorSpecError(f"{spec}: {attr!r} is a module, not a factory function")
    if not callable(factory):
        raise GeneratorSpecError(f"{spec}: {attr!r} is not callable (it is an object of type "
                                 f"{type(factory).__name__})")
    try:
        obj = factory()
    except Exception as exc:  # noqa: BLE001 - user code
        raise GeneratorSpecError(f"{spec}: calling {attr}() failed: "
                                 f"{type(exc).__name__}: {exc}") from None
    check_interface(obj, f"{spec} ({attr}())")
    check_contract(obj, f"{spec} ({attr}())")
    name = str(getattr(obj, "name", "") or spec)
    cal = getattr(obj, "calibration_path", None)
    if cal is None:
        module_file = getattr(module, "__file__", None) or getattr(sys.modules[module_name],
                                                                   "__file__", None)
        if module_file:
            cal = Path(module_file).with_name(f"{module_name.rsplit('.', 1)[-1]}.{attr}"
                                              ".calibration.json")
    return GeneratorHandle(name, obj, spec, Path(cal) if cal else None,
                           getattr(obj, "sha256", None) or weights_fingerprint(obj))


def trained_zoo_names() -> list[str]:
    """Names of the zoo generators that have trained weights (catalogue order)."""
    from genprint.world import zoo

    return [g["name"] for g in zoo.list_generators(trained_only=True)]


def split_specs(spec: str) -> list[str]:
    """The individual specs of a comma-separated list, with ``zoo:*`` expanded."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise GeneratorSpecError("empty generator spec; expected zoo:NAME, zoo:* or "
                                 "package.module:factory")
    out: list[str] = []
    for part in parts:
        if part == "zoo:*":
            names = trained_zoo_names()
            if not names:
                from genprint.world.zoo.store import train_hint

                raise GeneratorSpecError("zoo:* matches no generator: the zoo has no trained "
                                         f"weights ({train_hint()})")
            out.extend(f"zoo:{n}" for n in names)
        else:
            out.append(part)
    return list(dict.fromkeys(out))


def resolve_one(spec: str) -> GeneratorHandle:
    """Resolve a single spec (``zoo:NAME`` or ``package.module:factory``)."""
    spec = spec.strip()
    if spec.startswith("zoo:"):
        return _zoo(spec[4:])
    if ":" not in spec:
        raise GeneratorSpecError(f"bad generator spec {spec!r}: expected zoo:NAME, zoo:* or "
                                 "package.module:factory")
    return _factory(spec)


def resolve(spec: str) -> list[GeneratorHandle]:
    """Resolve a spec that may name several generators (see module doc)."""
    handles = [resolve_one(s) for s in split_specs(spec)]
    names = [h.name for h in handles]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise GeneratorSpecError(f"several generators are called {', '.join(dup)}")
    return handles
