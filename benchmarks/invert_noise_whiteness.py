"""Exploration for pixel-space diffusion: is the DDIM-inverted noise of an image white?

Reconstruction loss does not separate a pixel-space DDIM generator's own images from others
(AUC ≈ 0.6, docs/invert.md). This script tries a sampler-aware test instead: run the
generator's deterministic DDIM inversion (its ``encode``; no optimisation) and ask whether the
recovered starting noise looks like the N(0, I) draw that a member started from. Statistics of
the recovered noise z (3×H×W), each "higher = less like white noise":

* ``model``       — squared Mahalanobis distance of the noise's features from the members' noise
  model (:mod:`genprint.verify.noise_model`), fitted on ``--model-n`` *other* members: what
  calibrations use;
* ``1-flatness``  — 1 − spectral flatness (geometric / arithmetic mean of |FFT(z)|², per channel);
* ``ringdev``     — squared deviation of the radially averaged power spectrum from flat;
* ``patchcov3``   — ‖C − I‖²_F of the covariance of 3×3×3 patches of z;
* ``autocorr``    — |lag-1 spatial autocorrelation|;
* ``|norm-1|``, ``|kurt-3|`` — moments of z against those of N(0, 1);
* ``cycle``       — MSE(decode(encode(x)), x) (for comparison; it runs the wrong way).

It prints, per statistic, the AUC of members against all non-members (real camera images and
other zoo generators, including the sibling pixel-diffusion model) and against each group.
Image sets are drawn from the validation seeds of ``invert_auc.py --split val``, so the test
figures stay untouched. With two or more pixel-diffusion generators it also prints, per pair, how
alike their samples are when started from the *same* noise (correlation and MSE, against
different noise): diffusion models trained on the same data map a noise to nearly the same image
(Zhang et al., "The Emergence of Reproducibility and Consistency in Diffusion Models", ICML 2024),
which no test of the noise → image map can see past.

    python benchmarks/invert_noise_whiteness.py [--generators ddim-pixel-s0 ddim-pixel-s1]
        [--members 60] [--real 60] [--per-other 10]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _invert_common import other_samples, real_images, samples
from sklearn.metrics import roc_auc_score

from genprint.verify.generators import resolve_one, trained_zoo_names
from genprint.verify.inversion import noise_whiteness_score
from genprint.verify.noise_model import NoiseModel
from genprint.world.zoo import diffusion


def recovered_noise(gen, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM-inverted noise of uint8 N×H×W×3 ``images`` and the images in [−1, 1]."""
    x = torch.tensor(images).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    with torch.no_grad():
        return diffusion.ddim_invert(gen.eps, x, gen.spec.ddim_steps, gen.abar), x


def noise_statistics(gen, images: np.ndarray, model: NoiseModel) -> dict[str, np.ndarray]:
    """The statistics of the module doc for uint8 N×H×W×3 ``images``."""
    z, x = recovered_noise(gen, images)
    with torch.no_grad():
        rec = diffusion.ddim_sample(gen.eps, z, gen.spec.ddim_steps, gen.abar, clip=1.0)
    var = (z ** 2).mean((1, 2, 3))
    ac = ((z[:, :, 1:] * z[:, :, :-1]).mean((1, 2, 3))
          + (z[:, :, :, 1:] * z[:, :, :, :-1]).mean((1, 2, 3))) / 2 / var
    kurt = ((z - z.mean((1, 2, 3), keepdim=True)) ** 4).mean((1, 2, 3)) / var ** 2
    power = torch.fft.fft2(z).abs() ** 2
    h = z.shape[-1]
    f = torch.fft.fftfreq(h).abs()
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    ring = torch.clamp((radius / radius.max() * 8).long(), max=7)
    pn = power / power.mean((2, 3), keepdim=True)
    ringdev = sum(((pn[:, :, ring == b].mean(2) - 1) ** 2).mean(1) for b in range(8))
    patches = torch.nn.functional.unfold(z, 3)
    patches = patches - patches.mean(2, keepdim=True)
    cov = patches @ patches.transpose(1, 2) / patches.shape[2]
    pc3 = ((cov - torch.eye(cov.shape[1])) ** 2).sum((1, 2))
    out = {"model": torch.from_numpy(model.distance(z)), "1-flatness": noise_whiteness_score(z), "ringdev": ringdev, "patchcov3": pc3, "autocorr": ac.abs(),
           "|norm-1|": (var - 1).abs(), "|kurt-3|": (kurt - 3).abs(),
           "cycle": ((rec - x) ** 2).mean((1, 2, 3))}
    return {k: v.numpy() for k, v in out.items()}


def same_noise_similarity(gen_a, gen_b, n: int = 64) -> dict[str, float]:
    """Correlation and MSE (in [−1, 1] units) of two DDIM generators' samples from the same noise,
    and from different noise, for comparison."""
    shape = (n, 3, gen_a.resolution, gen_a.resolution)
    z1 = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    z2 = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = diffusion.ddim_sample(gen_a.eps, z1, gen_a.spec.ddim_steps, gen_a.abar, clip=1.0)
        b = diffusion.ddim_sample(gen_b.eps, z1, gen_b.spec.ddim_steps, gen_b.abar, clip=1.0)
        c = diffusion.ddim_sample(gen_b.eps, z2, gen_b.spec.ddim_steps, gen_b.abar, clip=1.0)

    def corr(u: torch.Tensor, v: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([u.flatten(), v.flatten()]))[0, 1])

    return {"corr_same_noise": corr(a, b), "corr_other_noise": corr(a, c),
            "mse_same_noise": float(((a - b) ** 2).mean()),
            "mse_other_noise": float(((a - c) ** 2).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", nargs="+", default=["ddim-pixel-s0", "ddim-pixel-s1"])
    parser.add_argument("--members", type=int, default=60)
    parser.add_argument("--real", type=int, default=60)
    parser.add_argument("--per-other", type=int, default=10)
    parser.add_argument("--model-n", type=int, default=500, help="other members the noise "
                        "model is fitted on")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = trained_zoo_names()
    for name in args.generators:
        gen = resolve_one(f"zoo:{name}").obj
        if gen.family != "ddim":
            raise SystemExit(f"{name}: only pixel-space diffusion generators (family ddim)")
        mem = samples(name, args.members, "val-members")
        real = real_images(args.real, gen.resolution, "val-")
        others, _ = other_samples(name, [o for o in names if o != name],
                                  per_other=args.per_other, prefix="val-")
        model = NoiseModel.fit(recovered_noise(gen, samples(name, args.model_n, "val-fit"))[0],
                               seed=0)
        m, r, o = (noise_statistics(gen, s, model) for s in (mem, real, others))
        print(f"{name}: {len(mem)} members, {len(real)} real, {len(others)} other-generator images")
        print(f"{'statistic':12s} {'AUC':>6s} {'vs real':>8s} {'vs others':>10s}")
        for k in m:
            def auc(a: np.ndarray, b: np.ndarray) -> float:
                return float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]))
            print(f"{k:12s} {auc(m[k], np.r_[r[k], o[k]]):6.3f} {auc(m[k], r[k]):8.3f} "
                  f"{auc(m[k], o[k]):10.3f}")
    for i, a in enumerate(args.generators):
        for b in args.generators[i + 1:]:
            sim = same_noise_similarity(resolve_one(f"zoo:{a}").obj, resolve_one(f"zoo:{b}").obj)
            print(f"{a} vs {b}, same noise: corr {sim['corr_same_noise']:.3f}, MSE "
                  f"{sim['mse_same_noise']:.3f}; different noise: corr "
                  f"{sim['corr_other_noise']:.3f}, MSE {sim['mse_other_noise']:.3f}")


if __name__ == "__main__":
    main()
