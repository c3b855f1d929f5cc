"""Benchmark: feature-extraction throughput (images/s) of every available backbone.

For each registered backbone that can be built here (and any local checkpoints given with
``--backbone PATH``), times :func:`genprint.backbones.features.extract_features` without the
cache (the backbone forward of every block plus centre cropping) on random images, at the
backbone's native input size and at the size it uses on the built-in world's 32×32 images.
Also times a second, cached pass (what a re-run of ``genprint train probe`` pays).

    python benchmarks/feature_extraction.py [--n 256] [--batch-size 64] [--threads 2]
        [--sizes native world] [--size 64 112] [--backbone PATH ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from genprint.backbones.base import BACKBONES, _ensure_builtin_backbones
from genprint.backbones.common import fit_input_size, size_rules
from genprint.backbones.features import FeatureCache, extract_features
from genprint.backbones.resolve import backbone_for_images

WORLD_SIDE = 32


def sizes_for(name: str, which: list[str], extra: list[int] | None = None) -> list[int]:
    """Input sides to time for backbone ``name``: native and/or the 32×32-world one, plus the
    ``extra`` sides valid for it (e.g. the input a small image is padded up to)."""
    pre = backbone_for_images(name, None).preprocessing
    native, multiple, smallest = size_rules(pre)
    out = [s for s in extra or [] if s % multiple == 0 and s >= smallest]
    if "native" in which:
        out.append(pre.input_size)
    if "world" in which:
        try:
            out.append(fit_input_size(native, multiple, smallest, WORLD_SIDE))
        except ValueError:
            pass
    return sorted(set(out))


def time_backbone(name: str, size: int, n: int, batch_size: int) -> dict[str, float]:
    """images/s of uncached and cached extraction at input ``size``."""
    backbone = backbone_for_images(name, None, size)
    rng = np.random.default_rng(0)
    images = list(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    extract_features(backbone, images[: min(8, n)], batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    extract_features(backbone, images, batch_size=batch_size)
    uncached = n / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(backbone, tmp)
        extract_features(backbone, images, batch_size=batch_size, cache=cache)
        start = time.perf_counter()
        extract_features(backbone, images, batch_size=batch_size, cache=FeatureCache(backbone, tmp))
        cached = n / (time.perf_counter() - start)
    return {"uncached": uncached, "cached": cached, "layers": len(backbone.layer_names())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images per timing")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sizes", nargs="+", default=["native", "world"],
                        choices=["native", "world"])
    parser.add_argument("--size", type=int, nargs="+", default=[],
                        help="also time these input sides where valid (e.g. 64 112: inputs "
                             "that --pad feeds padded 32x32 images at)")
    parser.add_argument("--backbone", action="append", default=[],
                        help="extra backbone (name or local path); repeatable")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _ensure_builtin_backbones()
    names = [*BACKBONES.names(), *args.backbone]
    print(f"{'backbone':<28} {'input':>6} {'layers':>6} {'img/s':>9} {'cached img/s':>13}")
    for name in names:
        try:
            sizes = sizes_for(name, args.sizes, args.size)
        except (ImportError, FileNotFoundError, ValueError) as exc:
            print(f"{name:<28} unavailable: {exc}")
            continue
        for size in sizes:
            r = time_backbone(name, size, args.n, args.batch_size)
            print(f"{name:<28} {size:>6} {r['layers']:>6} {r['uncached']:>9.1f} "
                  f"{r['cached']:>13.0f}", flush=True)
    print(f"(threads: {args.threads}, batch {args.batch_size}, {args.n} random images per row; "
          "uncached = crop + forward of every block)")


if __name__ == "__main__":
    main()
