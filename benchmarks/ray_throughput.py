"""Benchmark: batch attribution on Ray Data against the local ``attribute`` path, same files.

Writes ``--n`` 32×32 PNGs to a temporary folder (or takes the images in ``--images``) and
times, in the same run:

* local: ``Attributor.iter_attribute(paths)`` in this process (the path of
  ``genprint attribute``), torch with its default threads;
* Ray: :func:`genprint.scale.iter_attributions` on the same paths, ``--actors`` actors of one
  CPU each, on a local Ray started here with ``--actors`` CPUs (or the cluster at
  ``--address``). Ray's start-up (``ray.init``) is timed apart; the Ray figure includes what
  every run pays: starting the actors and loading the model in each.

It prints images/s for each and the ratio Ray / local, and checks that both gave the same
labels. The model is ``--model`` (any saved attributor) or, by default, a tiny ``baseline``
trained here on three toy sources of 32×32 images.

    python benchmarks/ray_throughput.py [--model DIR] [--n 2000] [--actors 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import genprint
from genprint.io.sources import scan_inputs
from genprint.methods.baseline import BaselineAttributor


def toy_image(rng: np.random.Generator, period: int, size: int = 32) -> np.ndarray:
    """A smooth random scene with a periodic trace of ``period`` pixels (a toy source)."""
    img = rng.integers(60, 200, (size, size, 3)).astype(np.float32)
    img = np.cumsum(img, axis=1) / np.arange(1, size + 1)[None, :, None]
    img[::period, ::period] += 30
    return np.clip(img, 0, 255).astype(np.uint8)


def tiny_baseline(folder: Path) -> Path:
    """A ``baseline`` model fitted on three toy sources (periods 2, 3, 5), saved in ``folder``."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for name, period in (("alpha", 2), ("beta", 3), ("gamma", 5)):
        images += [toy_image(rng, period) for _ in range(40)]
        labels += [name] * 40
    train = list(range(0, len(images), 2))
    val = list(range(1, len(images), 2))
    model = BaselineAttributor().fit([images[i] for i in train], [labels[i] for i in train],
                                     [images[i] for i in val], [labels[i] for i in val])
    return model.save(folder / "model")


def write_images(folder: Path, n: int) -> list[Path]:
    """``n`` 32×32 PNGs of the three toy sources, in turn."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{i:06d}.png"
        Image.fromarray(toy_image(rng, (2, 3, 5)[i % 3])).save(p)
        paths.append(p)
    return paths


def timed(rows: Iterator[Any]) -> tuple[float, float, list]:
    """(seconds to the first row, seconds in all, rows) of consuming ``rows``."""
    t = time.perf_counter()
    first = None
    out = []
    for row in rows:
        if first is None:
            first = time.perf_counter() - t
        out.append(row)
    return first or 0.0, time.perf_counter() - t, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a saved attributor")
    parser.add_argument("--images", type=Path, default=None,
                        help="a folder of images (default: --n synthetic 32×32 PNGs)")
    parser.add_argument("--n", type=int, default=2000, help="number of synthetic PNGs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--actors", type=int, default=2, help="Ray actors, one CPU each")
    parser.add_argument("--address", default=None, help="a running Ray cluster")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each path; the best is reported")
    args = parser.parse_args()

    import ray

    from genprint.scale import iter_attributions

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_baseline(Path(tmp))
        paths = scan_inputs([args.images]) if args.images else write_images(Path(tmp) / "png",
                                                                            args.n)
        n = len(paths)
        attributor = genprint.load(model)
        print(f"{n} images, model {attributor.method} ({model}), batch size {args.batch_size}")

        _, local_s, local = min(
            (timed(attributor.iter_attribute(paths, batch_size=args.batch_size))
             for _ in range(args.repeat)), key=lambda r: r[1])

        t = time.perf_counter()
        if args.address:
            ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(num_cpus=args.actors, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
        startup = time.perf_counter() - t
        try:
            first_s, ray_s, on_ray = min(
                (timed(iter_attributions(model, paths, actors=args.actors,
                                         batch_size=args.batch_size))
                 for _ in range(args.repeat)), key=lambda r: r[1])
        finally:
            ray.shutdown()

    same = [a.label for a in local] == [b.label for b in on_ray]
    print(f"local:  {n / local_s:8.1f} images/s ({local_s:.2f} s)")
    print(f"ray:    {n / ray_s:8.1f} images/s ({ray_s:.2f} s, {args.actors} actor(s) of 1 CPU; "
          "actor start-up and model loading included)")
    print(f"ray / local: {local_s / ray_s:.2f}")
    print(f"ray, first row after {first_s:.2f} s (actors started, model loaded, first batch); "
          f"the others came at {(n - 1) / max(ray_s - first_s, 1e-9):.1f} images/s (an upper "
          "bound of the steady rate: some were ready before the first arrived)")
    print(f"ray start-up (ray.init, not in the figure above): {startup:.2f} s")
    print(f"same labels on both paths: {same}")


if __name__ == "__main__":
    main()
