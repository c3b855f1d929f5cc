"""Benchmark: attribution throughput of the ``metric`` method on 32×32 PNGs.

Writes ``--n`` 32×32 PNGs to a temporary folder and times, at the same batch size:

* ``attribute``: files → decoded, checked, tiled, embedded, scored and decided (the full path);
* ``attribute_arrays``: the same from decoded arrays (no file I/O);
* the bare network forward pass (``embed``) on preloaded tensors of the same batches.

It prints images/s for each and the ratios to the bare forward pass. The model is ``--model``
(a saved ``metric`` directory) or, by default, an untrained network of the default architecture
(throughput does not depend on the weights).

    python benchmarks/metric_throughput.py [--model DIR] [--n 2000] [--batch-size 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import genprint
from genprint.backbones.forensic_cnn import patches_to_tensor
from genprint.methods.metric import FORWARD_CHUNK, MetricAttributor


def smooth(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random scene with mild noise."""
    base = rng.integers(0, 256, (size // 8 + 1, size // 8 + 1, 3)).astype(np.float32)
    img = np.kron(base, np.ones((8, 8, 1)))[:size, :size] + rng.normal(0, 6, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def untrained_model() -> MetricAttributor:
    """A default-architecture model, 'fitted' with no training epochs on 2 toy sources."""
    rng = np.random.default_rng(0)
    images = [smooth(rng, 32) for _ in range(8)]
    labels = ["a", "b"] * 4
    return MetricAttributor(epochs=0).fit(images, labels, images, labels)


def rate(fn, n: int, repeat: int = 3) -> float:
    """Best images/s over ``repeat`` runs of ``fn`` (which handles ``n`` images)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a saved metric model")
    parser.add_argument("--n", type=int, default=2000, help="number of 32×32 PNGs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = genprint.load(args.model) if args.model else untrained_model()
    if not isinstance(model, MetricAttributor):
        raise SystemExit(f"{args.model} is a {model.method!r} model, not a metric one")
    size = model.patch_size
    rng = np.random.default_rng(1)
    arrays = [smooth(rng, size) for _ in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, img in enumerate(arrays):
            p = Path(tmp) / f"{i:05d}.png"
            Image.fromarray(img).save(p)
            paths.append(p)
        b = args.batch_size
        batches = [patches_to_tensor(np.stack(arrays[i : i + b])) for i in range(0, args.n, b)]

        chunk = FORWARD_CHUNK
        chunks = [patches_to_tensor(np.stack(arrays[i : i + chunk]))
                  for i in range(0, args.n, chunk)]

        def bare() -> None:
            with torch.inference_mode():
                for x in batches:
                    model.net_.embed(x)

        def bare_chunks() -> None:  # the forward passes attribute makes (FORWARD_CHUNK tiles)
            with torch.inference_mode():
                for x in chunks:
                    model.net_.embed(x)

        def from_arrays() -> None:
            for i in range(0, args.n, b):
                model.attribute_arrays(arrays[i : i + b])

        model.net_.eval()
        bare()  # warm-up
        r_bare = rate(bare, args.n)
        bare_chunks()
        r_chunks = rate(bare_chunks, args.n)
        r_arrays = rate(from_arrays, args.n)
        r_files = rate(lambda: model.attribute(paths, batch_size=b), args.n)
    print(f"metric attribution, {args.n} {size}×{size} PNGs, batch {b}, "
          f"{torch.get_num_threads()} torch thread(s)")
    print(f"  bare forward pass      {r_bare:9.0f} images/s")
    print(f"  bare, chunks of {chunk:<3d}    {r_chunks:9.0f} images/s  (what attribute runs: "
          "fixed-size chunks keep scores independent of the batch)")
    print(f"  attribute_arrays       {r_arrays:9.0f} images/s  ({r_arrays / r_bare:.2f}× bare, "
          f"{r_arrays / r_chunks:.2f}× bare in chunks)")
    print(f"  attribute (files)      {r_files:9.0f} images/s  ({r_files / r_bare:.2f}× bare, "
          f"{r_files / r_chunks:.2f}× bare in chunks)")


if __name__ == "__main__":
    main()
