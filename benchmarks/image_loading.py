"""Benchmark: image-loading throughput (images/s) of genprint's reader.

Builds two folders in a temporary directory — 32×32 PNGs and 256×256 JPEGs of smooth random
scenes — and times genprint's batch reader (`iter_images`, which decodes, validates and converts
every file) against a bare Pillow decode of the same files in the same run.

    python benchmarks/image_loading.py [--n 2000] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from genprint.io.batches import iter_images


def _smooth(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(0, 256, (size // 8 + 1, size // 8 + 1, 3)).astype(np.float32)
    img = np.kron(base, np.ones((8, 8, 1)))[:size, :size]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_folder(root: Path, n: int, size: int, fmt: str) -> list[Path]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = root / f"{i:05d}.{'png' if fmt == 'PNG' else 'jpg'}"
        Image.fromarray(_smooth(rng, size)).save(p, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(p)
    return paths


def bare_pillow(paths: list[Path]) -> float:
    t = time.perf_counter()
    for p in paths:
        with Image.open(io.BytesIO(p.read_bytes())) as img:
            np.asarray(img.convert("RGB"))
    return len(paths) / (time.perf_counter() - t)


def genprint_reader(paths: list[Path], workers: int | None) -> float:
    t = time.perf_counter()
    n = sum(1 for _ in iter_images(paths, workers=workers))
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images per folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for label, size, fmt in (("32x32 PNG", 32, "PNG"), ("256x256 JPEG", 256, "JPEG")):
            paths = make_folder(Path(tmp) / label.replace(" ", "_"), args.n, size, fmt)
            genprint_reader(paths[:50], 1)  # warm the page cache
            base = bare_pillow(paths)
            print(f"{label}: bare Pillow decode (1 thread): {base:8.0f} images/s")
            auto = genprint_reader(paths, None)  # type: ignore[arg-type]
            print(f"{label}: genprint iter_images, automatic workers: {auto:8.0f} images/s "
                  f"(ratio to bare Pillow: {auto / base:.2f})")
            for w in args.workers:
                rate = genprint_reader(paths, w)
                print(f"{label}: genprint iter_images, {w} worker(s): {rate:8.0f} images/s "
                      f"(ratio to bare Pillow: {rate / base:.2f})")


if __name__ == "__main__":
    main()
