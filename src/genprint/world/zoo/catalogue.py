"""The zoo's catalogue: 12 generators in 4 families, registered in :data:`ZOO`.

Three pairs differ only by training seed (``gan-tconv``, ``gan-pshuffle``, ``ddim-pixel``);
the GANs cover the four upsampling operators (transposed convolution, nearest, bilinear, pixel
shuffle); the latent-diffusion models each train their own autoencoder first.
"""

from __future__ import annotations

from genprint.registry import Registry
from genprint.world.zoo.generator import GeneratorSpec

ZOO: Registry[GeneratorSpec] = Registry("generator")


def _add(spec: GeneratorSpec) -> None:
    ZOO.add(spec.name, spec, family=spec.family)


for _up, _seeds in (("tconv", (0, 1)), ("nearest", (0,)), ("bilinear", (0,)),
                    ("pshuffle", (0, 1))):
    for _s in _seeds:
        _add(GeneratorSpec(f"gan-{_up}-s{_s}", "gan", _up, _s, latent_dim=64, width=128,
                           steps=1500, lr=2e-4))
for _up in ("tconv", "nearest"):
    _add(GeneratorSpec(f"vae-{_up}-s0", "vae", _up, 0, latent_dim=64, width=128, steps=2000,
                       lr=1e-3, extra={"beta": 1.0}))
for _s in (0, 1):
    _add(GeneratorSpec(f"ddim-pixel-s{_s}", "ddim", "none", _s, width=16, steps=2500,
                       batch_size=32, lr=1e-3, ddim_steps=10, extra={"ema": 0.995}))
for _up in ("tconv", "bilinear"):
    _add(GeneratorSpec(f"ldm-{_up}-s0", "ldm", _up, 0, latent_dim=32, width=128, steps=3000,
                       ae_steps=2000, batch_size=64, lr=1e-3, ddim_steps=10,
                       extra={"beta": 0.05, "latent_batch": 256, "ema": 0.995}))
